"""LazyAdam: Adam for row-sparse gradients (an embedding table), touching only the rows a batch used.

The rule is ``torch.optim.SparseAdam``'s, exactly: the moments of a row move only when the row has a gradient,
with Adam's bias correction by the parameter's step count and ``eps`` added to √v before the correction. It is
computed with row gathers and scatters (``index_select`` / ``index_copy_``) on the distinct rows instead of
sparse-tensor arithmetic over the whole table, which on CPU costs several times more per step.
"""

from __future__ import annotations

import math

import torch


class LazyAdam(torch.optim.Optimizer):
    """Lazy Adam over parameters whose gradients are sparse COO tensors (``nn.EmbeddingBag(sparse=True)``)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0 or not eps > 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"LazyAdam needs lr > 0, eps > 0 and betas in [0, 1), got lr={lr}, betas={betas}, "
                             f"eps={eps}.")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("LazyAdam takes sparse gradients only; train dense parameters with AdamW.")
                rows, values = unique_rows(param.grad)
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg = state["exp_avg"].index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values,
                                                                                            value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                update = exp_avg.div_(exp_avg_sq.sqrt_().add_(group["eps"]))
                param.index_copy_(0, rows, param.index_select(0, rows).add_(update, alpha=-step_size))
        return loss


def unique_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct rows, their summed gradients) of a sparse COO gradient over dim 0 (what ``coalesce``
    gives, by a sort of the row ids and one small ``index_add_``)."""
    if grad.is_coalesced():
        return grad.indices()[0], grad.values()
    rows, inverse = torch.unique(grad._indices()[0], sorted=True, return_inverse=True)
    values = grad._values()
    summed = torch.zeros((len(rows), *values.shape[1:]), dtype=values.dtype, device=values.device)
    return rows, summed.index_add_(0, inverse, values)
