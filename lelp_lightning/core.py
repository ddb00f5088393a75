"""The vocabulary every sub-package shares: split names, the unlabeled marker, one split's rows, the source
base class, fingerprints, shard bounds and the least-squares probe (a linear read-out of the teacher's
logits, which the data module and the file teacher both fit).

Depends on numpy and the standard library only (and :mod:`lelp_lightning.errors`), so that sources,
teachers, the cache, strategies, objectives and the data module can all read it without importing each other.
"""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from lelp_lightning.errors import LelpError

SPLITS = ("train", "val", "test")
UNLABELED = -1  # the label of a training row whose true label the run may not read (semi-supervised setting)
FINAL = "final"  # the representation every teacher has: the input of its final linear layer


@dataclass
class SplitData:
    """One split: the raw inputs, integer labels in [0, C), optional fine labels, and stable row ids.

    ``texts`` holds the raw inputs: a list of strings, or a uint8 array [N,H,W] of images
    (:mod:`lelp_lightning.sources.images`).
    """

    name: str
    texts: list[str] | np.ndarray
    labels: np.ndarray
    row_ids: np.ndarray
    fine_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(np.ascontiguousarray(self.row_ids, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if isinstance(self.texts, np.ndarray):
            h.update(f"{self.texts.dtype}{self.texts.shape}".encode())
            h.update(np.ascontiguousarray(self.texts).tobytes())
            return h.hexdigest()[:16]
        for t in self.texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()[:16]


class Source(ABC):
    """A labeled dataset (texts, or images: :mod:`lelp_lightning.sources.images`) with a deterministic
    train/val/test split; :mod:`lelp_lightning.sources` has one module per dataset."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._splits: dict[str, SplitData] | None = None

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Names of the C classes, index = label."""

    @abstractmethod
    def _load(self) -> dict[str, SplitData]:
        """Read the rows and split them; called once."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> SplitData:
        if self._splits is None:
            self._splits = self._load()
            _check_splits(self._splits, self.class_names)
        return self._splits[name]

    def options(self) -> dict:
        """The constructor options that define the rows; part of the fingerprint."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def fingerprint(self) -> str:
        payload = json.dumps({"class": type(self).__qualname__, **self.options()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_splits(splits: dict[str, SplitData], class_names: list[str]) -> None:
    train = splits["train"]
    present = set(np.unique(train.labels).tolist())
    if len(present) < 2:
        raise LelpError(f"the training split has a single class ({[class_names[c] for c in sorted(present)]}); "
                        "distillation needs at least two.")
    for name in SPLITS:
        s = splits[name]
        if len(s) == 0:
            raise LelpError(f"the {name} split is empty; expected at least one row (check the split sizes).")
        unseen = set(np.unique(s.labels).tolist()) - present
        if unseen:
            raise LelpError(f"the {name} split has labels {[class_names[c] for c in sorted(unseen)]} that never "
                            "occur in the training split; every class needs training rows.")


class TeacherStatistics:
    """What an objective may know of the teacher before training: the training split's teacher embeddings'
    size and per-dimension mean / std (computed on first use, in chunks, from a possibly memory-mapped array)."""

    def __init__(self, train_embedding: np.ndarray):
        self._embedding = train_embedding

    @property
    def embedding_dim(self) -> int:
        return int(self._embedding.shape[1])

    @functools.cached_property
    def embedding_mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and (population) std, accumulated in float64 over 65,536-row chunks."""
        x, chunk = self._embedding, 65536
        total, total_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
        for lo in range(0, x.shape[0], chunk):
            part = np.asarray(x[lo:lo + chunk], dtype=np.float64)
            total += part.sum(0)
            total_sq += (part * part).sum(0)
        mean = total / x.shape[0]
        return mean, np.sqrt(np.maximum(total_sq / x.shape[0] - mean * mean, 0.0))


def fingerprint_of(kind: str, options: dict) -> str:
    """A short stable name for a component of kind ``kind`` with ``options`` (part of cache keys)."""
    payload = json.dumps({"kind": kind, **options}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def rows_fingerprint(rows: np.ndarray) -> str:
    """A short stable name for a set of row positions (part of cache keys)."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def hide_labels(labels: np.ndarray, labeled_rows: np.ndarray | None) -> np.ndarray:
    """A copy of ``labels`` with ``UNLABELED`` at every position not in ``labeled_rows`` (None: all visible)."""
    out = np.array(labels, dtype=np.int64)
    if labeled_rows is not None:
        visible = np.zeros(len(out), dtype=bool)
        visible[labeled_rows] = True
        out[~visible] = UNLABELED
    return out


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous rows [lo, hi) of ``rank``'s share of n rows (sizes differ by at most one)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def least_squares_probe(x: np.ndarray, targets: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(W [C,D], b [C]) minimising ‖x·Wᵀ + b − targets‖² (the minimum-norm solution when x is rank-deficient).

    Solved from the normal equations accumulated in float64 over row chunks, so ``x`` may be a memory-mapped
    array larger than memory.
    """
    n, d = x.shape
    gram = np.zeros((d + 1, d + 1))
    moment = np.zeros((d + 1, targets.shape[1]))
    for lo in range(0, n, chunk):
        block = np.asarray(x[lo: lo + chunk], dtype=np.float64)
        a = np.hstack([block, np.ones((len(block), 1))])
        gram += a.T @ a
        moment += a.T @ np.asarray(targets[lo: lo + chunk], dtype=np.float64)
    theta = np.linalg.lstsq(gram, moment, rcond=None)[0]
    return theta[:d].T.astype(np.float32), theta[d].astype(np.float32)
