"""SubclassStrategy: the base of every pseudo-subclass strategy (scikit-learn style, torch-native).

A strategy is fitted once on the teacher's training embeddings and then maps any embedding to subclass
logits ``z [B,C,S]``: one row of S logits for *every* class. The objective turns them into targets
``p[c,s] = softmax(f/τ)[c] · softmax(z[c]/β)[s]``. With ``z_scale='relative'`` (the default) each class's
z is divided by its standard deviation over that class's training rows, so β is relative to the spread
of z and one β works across datasets; ``'absolute'`` leaves z as computed.

Subclasses register by name: ``class MyStrategy(SubclassStrategy, name="mine", description="...")``.
Fitting reads the embeddings in chunks (they may be a memory-mapped cache larger than memory). Strategies
that need more than embeddings (row ids for a random split, fine labels for the oracle) name the
:class:`RowInfo` fields they read in ``requires``; the DataModule passes them for every split.
A strategy whose fit is a function of sums sets ``shardable = True`` and sums through ``self.comm``, so
under DDP each rank fits on its shard (see :mod:`lelp_lightning.strategies.distributed`).

Options follow scikit-learn's ``get_params`` rule: every ``__init__`` parameter is stored as an attribute of
the same name, and :meth:`SubclassStrategy.get_params` reads them through the constructor's
signature; the fingerprint and the saved state use them, less ``execution_params`` (``chunk_size``: how many
rows are read at a time, not what is fitted).
"""

from __future__ import annotations

import hashlib
import inspect
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.registry import Registry
from lelp_lightning.strategies.distributed import LOCAL, Comm, ProcessGroupComm

strategies = Registry("strategy", "lelp_lightning.strategies")

Z_SCALES = ("relative", "absolute")
DEFAULT_CHUNK = 16384
BLOCK_BYTES = 6 << 20  # bytes read per step of a per-class pass: about what stays in a CPU's cache


@dataclass(frozen=True)
class RowInfo:
    """Per-row side information aligned with the embeddings: stable row ids and the source's fine labels."""

    row_ids: np.ndarray | None = None
    fine_labels: np.ndarray | None = None

    def slice(self, lo: int, hi: int) -> RowInfo:
        return replace(self, **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[lo:hi]
                                for f in fields(self)})


def iter_chunks(embeddings: np.ndarray, labels: np.ndarray, chunk_size: int,
                dtype=np.float64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(embeddings as ``dtype``, labels) chunks of a possibly memory-mapped array."""
    for _, x, y, _ in iter_row_chunks(embeddings, labels, RowInfo(), chunk_size, dtype):
        yield x, y


def iter_row_chunks(embeddings: np.ndarray, labels: np.ndarray, rows: RowInfo, chunk_size: int,
                    dtype=np.float64) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, RowInfo]]:
    """(offset, embeddings, labels, row info) chunks; ``dtype=None`` keeps the embeddings' own dtype."""
    for lo in range(0, embeddings.shape[0], chunk_size):
        x = torch.from_numpy(np.array(embeddings[lo: lo + chunk_size], dtype=dtype))
        y = torch.from_numpy(np.array(labels[lo: lo + chunk_size], dtype=np.int64))
        yield lo, x, y, rows.slice(lo, lo + chunk_size)


def class_blocks(embeddings: np.ndarray, labels: np.ndarray, chunk_size: int,
                 block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, torch.Tensor]]:
    """(class c, class c's rows) for each block of about ``block_bytes`` (at most ``chunk_size`` rows) of a
    possibly memory-mapped array, in the embeddings' precision (float32 stays float32, others become float64).

    The block is read into one reused buffer and each class's rows gathered into a second one, so the
    elementwise work a caller does on them (shift, square) stays in the CPU cache: a fresh 16k-row chunk per
    step went to memory at a quarter of the speed. The rows are overwritten by the next step: the caller uses
    them (and may modify them in place) before asking for more.
    """
    N, D = embeddings.shape
    dtype = torch.float32 if embeddings.dtype == np.float32 else torch.float64
    block = max(1, min(chunk_size, block_bytes // (D * dtype.itemsize), N))
    buffer, gathered = torch.empty(block, D, dtype=dtype), torch.empty(block, D, dtype=dtype)
    for lo in range(0, N, block):
        x = buffer[:min(block, N - lo)]
        np.copyto(x.numpy(), embeddings[lo:lo + block])
        y = np.asarray(labels[lo:lo + block])
        for c in np.unique(y).tolist():
            index = torch.from_numpy(np.flatnonzero(y == c))
            yield c, torch.index_select(x, 0, index, out=gathered[:len(index)])


def column_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean row of x [n,D] in x's precision, as a BLAS matrix-vector product: on one thread torch's column
    reductions took far longer on a 5,000 × 768 float32 sample (``x.mean(0, dtype=float64)`` 15×, ``x.var(0)``
    55×)."""
    return (x.new_ones(x.shape[0]) @ x) / x.shape[0]


def one_hot_logits(index: torch.Tensor, size: int, margin: float) -> torch.Tensor:
    """Hard assignments as logits: ``margin`` at ``index``, 0 elsewhere (softmax(z/β) ≈ one-hot for β ≲ 1)."""
    return torch.nn.functional.one_hot(index, size).to(torch.float64) * margin


class SubclassStrategy(ABC):
    """Splits every class into ``num_subclasses`` pseudo-subclasses from the teacher's embeddings."""

    requires: tuple[str, ...] = ()  # RowInfo fields needed beside the embeddings
    shardable: bool = False  # fit sums through self.comm, so each DDP rank can fit on its shard
    execution_params: tuple[str, ...] = ("chunk_size",)  # parameters that change how, not what, it fits

    def __init_subclass__(cls, name: str | None = None, description: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            strategies.register(cls, name, description or "")
            cls.registered_name = name

    def __init__(self, num_subclasses: int = 4, z_scale: str = "relative", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        if int(num_subclasses) != num_subclasses or num_subclasses < 1:
            raise LelpError(f"num_subclasses (S) must be an integer >= 1, got {num_subclasses}.")
        if z_scale not in Z_SCALES:
            raise LelpError(f"z_scale must be one of {Z_SCALES}, got {z_scale!r}.")
        self.num_subclasses = int(num_subclasses)
        self.z_scale = z_scale
        self.seed = seed
        self.chunk_size = chunk_size
        self.num_classes: int | None = None
        self.embedding_dim: int | None = None
        self.scale: torch.Tensor | None = None  # [C]
        self._comm = LOCAL

    # -- what a strategy implements ---------------------------------------------------------------------
    @abstractmethod
    def _fit(self, embeddings: np.ndarray, labels: np.ndarray, W: torch.Tensor, b: torch.Tensor,
             rows: RowInfo) -> None:
        """Fit on (possibly memory-mapped) embeddings [N,D] with labels [N]; W,b is the teacher's classifier.

        ``rows.row_ids`` is always set (row positions when the caller had none). In a sharded fit the
        arguments are this rank's shard and every sum the fit depends on goes through ``self.comm.sum_``.
        """

    @abstractmethod
    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        """Unscaled z [B,C,S] for float64 embeddings x [B,D] (``rows`` aligned with x)."""

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """The fitted tensors."""

    @abstractmethod
    def _load_state(self, state: dict[str, torch.Tensor]) -> None: ...

    # -- the shared mechanism ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.scale is not None

    @property
    def comm(self) -> Comm:
        """How ``_fit`` combines statistics over the processes of a sharded fit: ``comm.sum_(*tensors)`` adds
        each tensor in place over the ranks, ``comm.gather(obj)`` lists every rank's ``obj``. In one process
        (and outside ``fit``) the sums are already global: ``sum_`` does nothing, ``gather`` gives ``[obj]``."""
        return self._comm

    def fit(self, embeddings: np.ndarray, labels: np.ndarray, classifier: tuple[np.ndarray, np.ndarray],
            rows: RowInfo | None = None, sharded: bool = False) -> SubclassStrategy:
        """Fit on the training split; returns self.

        ``rows`` carries per-row ids / fine labels (row ids default to positions). ``sharded=True`` means
        these rows are this rank's shard of the default process group and statistics are summed over ranks.
        """
        labels = np.asarray(labels)
        W = torch.as_tensor(np.asarray(classifier[0]), dtype=torch.float64)
        b = torch.as_tensor(np.asarray(classifier[1]), dtype=torch.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] != labels.shape[0]:
            raise LelpError(f"strategy fit needs embeddings [N,D] and labels [N], got {tuple(embeddings.shape)} "
                            f"and {tuple(labels.shape)}.")
        if W.shape[1] != embeddings.shape[1]:
            raise LelpError(f"the teacher classifier W has shape {tuple(W.shape)} but the embeddings have "
                            f"D={embeddings.shape[1]}; the classifier does not belong to these embeddings.")
        C = self.num_classes = W.shape[0]
        self.embedding_dim = embeddings.shape[1]
        if labels.size and (labels.min() < 0 or labels.max() >= C):
            raise LelpError(f"strategy fit needs labels in [0, {C}) for a {C}-class teacher, got labels from "
                            f"{labels.min()} to {labels.max()}.")
        rows = rows or RowInfo()
        if rows.row_ids is None:
            if sharded:
                raise LelpError("a sharded strategy fit needs rows.row_ids (global row ids), got none.")
            rows = replace(rows, row_ids=np.arange(labels.shape[0], dtype=np.int64))
        self._check_rows(rows, labels.shape[0])
        self._comm = ProcessGroupComm() if sharded else LOCAL
        try:
            counts = torch.from_numpy(np.bincount(labels, minlength=C).astype(np.float64))
            self.comm.sum_(counts)
            too_few = [c for c in range(C) if counts[c] < self.num_subclasses]
            if too_few:
                raise LelpError(f"class(es) {too_few} have {[int(counts[c]) for c in too_few]} training rows, fewer "
                                f"than num_subclasses={self.num_subclasses}; lower S or add rows.")
            self._fit(embeddings, labels, W, b, rows)
            self.scale = self._fit_scale(embeddings, labels, rows)
        finally:
            self._comm = LOCAL
        return self

    def _check_rows(self, rows: RowInfo, n: int) -> None:
        for name in self.requires:
            value = getattr(rows, name)
            if value is None:
                raise LelpError(f"the {getattr(self, 'registered_name', type(self).__name__)!r} strategy needs "
                                f"{name} for every row, got none (the data source must provide them).")
            if len(value) != n:
                raise LelpError(f"{name} has {len(value)} entries for {n} embeddings; they must be aligned.")

    def _fit_scale(self, embeddings: np.ndarray, labels: np.ndarray, rows: RowInfo) -> torch.Tensor:
        C = self.num_classes
        if self.z_scale == "absolute":
            return torch.ones(C, dtype=torch.float64)
        total, total_sq, count = self._own_class_moments(embeddings, labels, rows)
        mean = total / count.clamp(min=1)
        std = (total_sq / count.clamp(min=1) - mean ** 2).clamp(min=0).sqrt()
        return torch.where(std > 1e-12, std, torch.ones_like(std))

    def _own_class_moments(self, embeddings: np.ndarray, labels: np.ndarray,
                           rows: RowInfo) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Σz, Σz² and the count of the entries z[c,:] over class c's own training rows, summed over ranks."""
        C = self.num_classes
        total = torch.zeros(C, dtype=torch.float64)
        total_sq = torch.zeros(C, dtype=torch.float64)
        count = torch.zeros(C, dtype=torch.float64)
        for _, x, y, chunk_rows in iter_row_chunks(embeddings, labels, rows, self.chunk_size):
            z = self._raw_logits(x, chunk_rows)  # [B,C,S]
            own = z[torch.arange(len(y)), y]  # [B,S]: each row's own class
            total.index_add_(0, y, own.sum(1))
            total_sq.index_add_(0, y, (own ** 2).sum(1))
            count.index_add_(0, y, torch.full((len(y),), float(self.num_subclasses), dtype=torch.float64))
        self.comm.sum_(total, total_sq, count)
        return total, total_sq, count

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load_state_dict() first.")

    def subclass_logits(self, embeddings, rows: RowInfo | None = None) -> torch.Tensor:
        """z [B,C,S] (float32) for embeddings [B,D]; scaled per class when ``z_scale='relative'``."""
        self._check_fitted()
        x = torch.from_numpy(np.array(embeddings, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != self.embedding_dim:
            raise LelpError(f"{type(self).__name__} was fitted on D={self.embedding_dim} embeddings, got shape "
                            f"{tuple(x.shape)}.")
        rows = rows or RowInfo()
        self._check_rows(rows, x.shape[0])
        return (self._raw_logits(x, rows) / self.scale[None, :, None]).float()

    def transform(self, embeddings: np.ndarray, rows: RowInfo | None = None) -> np.ndarray:
        """z for a (possibly memory-mapped) array of any size, chunk by chunk."""
        rows = rows or RowInfo()
        out = np.empty((embeddings.shape[0], self.num_classes, self.num_subclasses), np.float32)
        for lo in range(0, embeddings.shape[0], self.chunk_size):
            hi = lo + self.chunk_size
            out[lo:hi] = self.subclass_logits(embeddings[lo:hi], rows.slice(lo, hi)).numpy()
        return out

    def report(self, embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Numbers this strategy measures about itself on a split (e.g. a retrained head's accuracy)."""
        return {}

    @classmethod
    def _param_names(cls) -> list[str]:
        """The names of the ``__init__`` parameters (scikit-learn's ``_get_param_names``)."""
        names = []
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:  # [0] is self
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__qualname__}.__init__ takes {p}: a strategy names each of its "
                                "parameters, so that get_params() can read them back.")
            names.append(p.name)
        return sorted(names)

    def get_params(self) -> dict:
        """Every ``__init__`` parameter and its value, read from the attribute of the same name, so that
        ``type(s)(**s.get_params())`` configures an equal strategy (scikit-learn's rule)."""
        missing = [n for n in self._param_names() if not hasattr(self, n)]
        if missing:
            raise TypeError(f"{type(self).__qualname__}.__init__ takes {missing} but does not store them as "
                            f"attributes of the same name; a strategy keeps each constructor parameter as self.<name>.")
        return {n: getattr(self, n) for n in self._param_names()}

    def options(self) -> dict:
        """The parameters that define what is fitted: :meth:`get_params` less ``execution_params``. The
        fingerprint and the saved state are keyed on them."""
        return {k: v for k, v in self.get_params().items() if k not in self.execution_params}

    def state_dict(self) -> dict:
        self._check_fitted()
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "options": self.options(),
                "num_classes": self.num_classes, "embedding_dim": self.embedding_dim,
                "scale": self.scale.clone(), "tensors": {k: v.clone() for k, v in self._state().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("options") != self.options():
            raise LelpError(f"the saved strategy state was fitted with {state.get('class')} {state.get('options')}, "
                            f"but this run configures {type(self).__name__} {self.options()}.")
        self.num_classes, self.embedding_dim = state["num_classes"], state["embedding_dim"]
        self.scale = state["scale"].clone()
        self._load_state({k: v.clone() for k, v in state["tensors"].items()})

    def fingerprint(self) -> str:
        """Changes with the options and, once fitted, with the fitted state."""
        h = hashlib.sha256(f"{type(self).__qualname__}{sorted(self.options().items())}".encode())
        if self.fitted:
            buf = io.BytesIO()
            torch.save({"scale": self.scale, **self._state()}, buf)
            h.update(buf.getvalue())
        return h.hexdigest()[:16]
