"""Optimisers for row-sparse gradients (an embedding table) that touch only the rows a batch used.

LazyAdam (the default) follows ``torch.optim.SparseAdam``'s rule exactly: the moments of a row move only when the
row has a gradient, with Adam's bias correction by the parameter's step count and ``eps`` added to √v before the
correction. It is computed with row gathers and scatters on the distinct rows instead of sparse-tensor arithmetic
over the whole table, which on CPU costs several times more per step. A step is bound by memory latency (three
random rows of three tables per distinct row), so it spends nothing else: the distinct rows come from a mark table
instead of a sort, and the row buffers are kept between steps (fresh multi-megabyte tensors page-fault on every
step).
RowwiseAdagrad keeps one number per row instead of two moment rows, so its step moves a third of the memory.
"""

from __future__ import annotations

import contextlib
import math

import torch


class RowSparseOptimizer(torch.optim.Optimizer):
    """Base of the optimisers here: steps each parameter's sparse COO gradient (``nn.EmbeddingBag(sparse=True)``)
    through :meth:`_update` with its distinct rows and their summed gradients, and keeps the work memory."""

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self._rows: dict[torch.Tensor, RowScratch] = {}  # per parameter; work memory, not state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with distinct_index_writes():
            for group in self.param_groups:
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    if not param.grad.is_sparse:
                        raise RuntimeError(f"{type(self).__name__} takes sparse gradients only; train dense "
                                           "parameters with AdamW.")
                    scratch = self._rows.get(param)
                    if scratch is None:
                        scratch = self._rows[param] = RowScratch(param)
                    rows, grad = scratch.coalesce(param.grad)
                    self._update(param, rows, grad, scratch, group)
        return loss

    def _update(self, param: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, scratch: RowScratch,
                group: dict) -> None:
        """Move ``param``'s ``rows`` (sorted, distinct) by their summed gradients ``grad``."""
        raise NotImplementedError


class LazyAdam(RowSparseOptimizer):
    """Lazy Adam over parameters whose gradients are sparse COO tensors (``nn.EmbeddingBag(sparse=True)``)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0 or not eps > 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"LazyAdam needs lr > 0, eps > 0 and betas in [0, 1), got lr={lr}, betas={betas}, "
                             f"eps={eps}.")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    def _update(self, param, rows, grad, scratch, group) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        value, exp_avg, exp_avg_sq, denom = scratch.buffers(len(rows))
        torch.index_select(param, 0, rows, out=value)
        torch.index_select(state["exp_avg"], 0, rows, out=exp_avg)
        torch.index_select(state["exp_avg_sq"], 0, rows, out=exp_avg_sq)
        state["step"] += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
        value.addcdiv_(exp_avg, torch.sqrt(exp_avg_sq, out=denom).add_(group["eps"]), value=-step_size)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        param.index_copy_(0, rows, value)


class RowwiseAdagrad(RowSparseOptimizer):
    """Adagrad with one accumulator per table row (the mean of the row's squared gradient), over sparse gradients.

    ``G_r += mean(g_r²)``, ``w_r -= lr · g_r / (√G_r + eps)`` for each row ``r`` the batch touched; untouched rows
    and their accumulators stay as they are. The rule embedding tables of recommender systems are trained with
    (TorchRec's and FBGEMM's row-wise Adagrad): its state is one number per row, so a step reads and writes the
    parameter rows only, where lazy Adam also moves two moment rows each.
    """

    def __init__(self, params, lr: float = 0.1, eps: float = 1e-8):
        if not lr > 0 or not eps > 0:
            raise ValueError(f"RowwiseAdagrad needs lr > 0 and eps > 0, got lr={lr}, eps={eps}.")
        super().__init__(params, {"lr": lr, "eps": eps})

    def _update(self, param, rows, grad, scratch, group) -> None:
        state = self.state[param]
        if not state:
            state["sum"] = torch.zeros(param.shape[0], dtype=param.dtype, device=param.device)
        value, squared = scratch.buffers(len(rows))[:2]
        row_sum = state["sum"].index_select(0, rows).add_(
            torch.mul(grad, grad, out=squared).reshape(len(rows), -1).mean(1))
        state["sum"].index_copy_(0, rows, row_sum)
        denom = row_sum.sqrt_().add_(group["eps"]).view(-1, *([1] * (grad.dim() - 1)))
        torch.index_select(param, 0, rows, out=value)
        param.index_copy_(0, rows, value.addcdiv_(grad, denom, value=-group["lr"]))


SPARSE_OPTIMIZERS = {"lazy_adam": LazyAdam, "rowwise_adagrad": RowwiseAdagrad}


class RowScratch:
    """Work memory for one sparse parameter: a mark and a position per table row (to find a gradient's distinct
    rows in O(rows + ids) without a sort) and row buffers that grow to the largest step seen."""

    def __init__(self, param: torch.Tensor):
        self.marked = torch.zeros(param.shape[0], dtype=torch.bool, device=param.device)
        self.position = torch.empty(param.shape[0], dtype=torch.long, device=param.device)
        self.shape, self.dtype, self.device = param.shape[1:], param.dtype, param.device
        self.rows_buffer = torch.empty((5, 0, *self.shape), dtype=self.dtype, device=self.device)

    def buffers(self, count: int) -> list[torch.Tensor]:
        """Four [count, ...] row buffers for an update's rows (beside the summed gradient :meth:`coalesce` keeps)."""
        return self._slots(count)[1:]

    def _slots(self, count: int) -> list[torch.Tensor]:
        """The five [count, ...] views of one kept allocation, grown when a step touches more rows than any before."""
        if self.rows_buffer.shape[1] < count:
            self.rows_buffer = torch.empty((5, int(count * 1.25), *self.shape), dtype=self.dtype, device=self.device)
        return [self.rows_buffer[i, :count] for i in range(5)]

    def coalesce(self, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted distinct rows, their summed gradients) of a sparse COO gradient over dim 0: what ``coalesce``
        gives, without its sort."""
        if grad.is_coalesced():
            return grad.indices()[0], grad.values()
        ids, values = grad._indices()[0], grad._values()
        self.marked.index_fill_(0, ids, True)
        rows = self.marked.nonzero().squeeze(1)
        self.marked.index_fill_(0, rows, False)
        self.position.index_copy_(0, rows, torch.arange(len(rows), device=rows.device))
        summed = self._slots(len(rows))[0]
        return rows, summed.zero_().index_add_(0, self.position.index_select(0, ids), values)


@contextlib.contextmanager
def distinct_index_writes():
    """Lets ``index_copy_`` take its direct path while deterministic algorithms are on: every index it gets here is
    distinct, so the result does not depend on the order of the writes, and the deterministic path would sort the
    indices of every write (three per step, most of a step's cost)."""
    if not torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
