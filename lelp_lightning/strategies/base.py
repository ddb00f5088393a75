"""SubclassStrategy: the base of every pseudo-subclass strategy (scikit-learn style, torch-native).

A strategy is fitted once on the teacher's training embeddings and then maps any embedding to subclass
logits ``z [B,C,S]``: one row of S logits for *every* class. The objective turns them into targets
``p[c,s] = softmax(f/τ)[c] · softmax(z[c]/β)[s]``. With ``z_scale='relative'`` (the default) each class's
z is divided by its standard deviation over that class's training rows, so β is relative to the spread
of z and one β works across datasets; ``'absolute'`` leaves z as computed.

Subclasses register by name: ``class MyStrategy(SubclassStrategy, name="mine", description="...")``.
Fitting reads the embeddings in chunks (they may be a memory-mapped cache larger than memory).
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.registry import Registry

strategies = Registry("strategy", "lelp_lightning.strategies")

Z_SCALES = ("relative", "absolute")


def iter_chunks(embeddings: np.ndarray, labels: np.ndarray, chunk_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float64 embeddings, labels) chunks of a possibly memory-mapped array."""
    for lo in range(0, embeddings.shape[0], chunk_size):
        x = torch.from_numpy(np.asarray(embeddings[lo: lo + chunk_size], dtype=np.float64))
        y = torch.from_numpy(np.asarray(labels[lo: lo + chunk_size], dtype=np.int64))
        yield x, y


class SubclassStrategy(ABC):
    """Splits every class into ``num_subclasses`` pseudo-subclasses from the teacher's embeddings."""

    def __init_subclass__(cls, name: str | None = None, description: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            strategies.register(cls, name, description or "")
            cls.registered_name = name

    def __init__(self, num_subclasses: int = 4, z_scale: str = "relative", seed: int = 0, chunk_size: int = 65536):
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

    # -- what a strategy implements ---------------------------------------------------------------------
    @abstractmethod
    def _fit(self, embeddings: np.ndarray, labels: np.ndarray, W: torch.Tensor, b: torch.Tensor) -> None:
        """Fit on (possibly memory-mapped) embeddings [N,D] with labels [N]; W,b is the teacher's classifier."""

    @abstractmethod
    def _raw_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled z [B,C,S] for float64 embeddings x [B,D]."""

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """The fitted tensors."""

    @abstractmethod
    def _load_state(self, state: dict[str, torch.Tensor]) -> None: ...

    # -- the shared mechanism ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.scale is not None

    def fit(self, embeddings: np.ndarray, labels: np.ndarray, classifier: tuple[np.ndarray, np.ndarray]) -> "SubclassStrategy":
        """Fit on the training split; returns self."""
        labels = np.asarray(labels)
        W = torch.as_tensor(np.asarray(classifier[0]), dtype=torch.float64)
        b = torch.as_tensor(np.asarray(classifier[1]), dtype=torch.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] != labels.shape[0]:
            raise LelpError(f"strategy fit needs embeddings [N,D] and labels [N], got {tuple(embeddings.shape)} "
                            f"and {tuple(labels.shape)}.")
        if W.shape[1] != embeddings.shape[1]:
            raise LelpError(f"the teacher classifier W has shape {tuple(W.shape)} but the embeddings have "
                            f"D={embeddings.shape[1]}; the classifier does not belong to these embeddings.")
        self.num_classes, self.embedding_dim = W.shape[0], embeddings.shape[1]
        counts = np.bincount(labels, minlength=self.num_classes)
        too_few = [c for c in range(self.num_classes) if counts[c] < self.num_subclasses]
        if too_few:
            raise LelpError(f"class(es) {too_few} have {[int(counts[c]) for c in too_few]} training rows, fewer than "
                            f"num_subclasses={self.num_subclasses}; lower S or add rows.")
        self._fit(embeddings, labels, W, b)
        self.scale = self._fit_scale(embeddings, labels)
        return self

    def _fit_scale(self, embeddings: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        C = self.num_classes
        if self.z_scale == "absolute":
            return torch.ones(C, dtype=torch.float64)
        total = torch.zeros(C, dtype=torch.float64)
        total_sq = torch.zeros(C, dtype=torch.float64)
        count = torch.zeros(C, dtype=torch.float64)
        for x, y in iter_chunks(embeddings, labels, self.chunk_size):
            z = self._raw_logits(x)  # [B,C,S]
            own = z[torch.arange(len(y)), y]  # [B,S]: each row's own class
            total.index_add_(0, y, own.sum(1))
            total_sq.index_add_(0, y, (own ** 2).sum(1))
            count.index_add_(0, y, torch.full((len(y),), float(self.num_subclasses), dtype=torch.float64))
        mean = total / count.clamp(min=1)
        std = (total_sq / count.clamp(min=1) - mean ** 2).clamp(min=0).sqrt()
        return torch.where(std > 1e-12, std, torch.ones_like(std))

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load_state_dict() first.")

    def subclass_logits(self, embeddings) -> torch.Tensor:
        """z [B,C,S] (float32) for embeddings [B,D]; scaled per class when ``z_scale='relative'``."""
        self._check_fitted()
        x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.embedding_dim:
            raise LelpError(f"{type(self).__name__} was fitted on D={self.embedding_dim} embeddings, got shape "
                            f"{tuple(x.shape)}.")
        return (self._raw_logits(x) / self.scale[None, :, None]).float()

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        """z for a (possibly memory-mapped) array of any size, chunk by chunk."""
        out = np.empty((embeddings.shape[0], self.num_classes, self.num_subclasses), np.float32)
        for lo in range(0, embeddings.shape[0], self.chunk_size):
            out[lo: lo + self.chunk_size] = self.subclass_logits(embeddings[lo: lo + self.chunk_size]).numpy()
        return out

    def options(self) -> dict:
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and k not in ("scale", "num_classes", "embedding_dim", "chunk_size")}

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
