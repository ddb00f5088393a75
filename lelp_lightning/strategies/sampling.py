"""Deterministic per-row randomness that does not depend on row order or sharding.

Every row gets a 64-bit hash of (row id, seed) (splitmix64, a bijection of the id for a fixed seed). A
class's sample is the ``size`` rows with the smallest hashes ("bottom-k" sampling): uniform over the rows,
found in one chunked pass with O(size) memory, and the same whichever rank saw which row, so sharded fits
merge their local samples into exactly the sample a single process draws.
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_hash(row_ids: np.ndarray, seed: int) -> np.ndarray:
    """uint64 hashes of ``row_ids`` under ``seed``: pseudo-random, fixed per (row, seed)."""
    key = _splitmix64(np.array([seed], dtype=np.int64).astype(np.uint64))[0]
    return _splitmix64(np.asarray(row_ids, dtype=np.int64).astype(np.uint64) ^ key)


def rows(x: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """x[index] by ``index_select``: several times faster than torch's advanced indexing on one thread."""
    return torch.index_select(x, 0, torch.from_numpy(np.asarray(index, dtype=np.int64)))


class ClassSample:
    """The ``size`` rows of each class with the smallest row hashes, collected chunk by chunk."""

    def __init__(self, num_classes: int, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.hashes = [np.zeros(0, np.uint64) for _ in range(num_classes)]
        self.rows = [None] * num_classes

    def update(self, x: torch.Tensor, y: torch.Tensor, row_ids: np.ndarray) -> None:
        h = row_hash(row_ids, self.seed)
        y_np = y.numpy()
        for c in np.unique(y_np).tolist():
            index = np.flatnonzero(y_np == c)
            if len(self.hashes[c]) >= self.size:  # only rows that can still enter the sample
                index = index[h[index] < self.hashes[c].max()]
            self._merge(c, h[index], rows(x, index))

    def _merge(self, c: int, h: np.ndarray, x: torch.Tensor) -> None:
        if len(h) == 0:
            return
        h = np.concatenate([self.hashes[c], h])
        x = x if self.rows[c] is None else torch.cat([self.rows[c], x.to(self.rows[c].dtype)])
        if len(h) > self.size:
            keep = np.argpartition(h, self.size - 1)[: self.size]
            h, x = h[keep], rows(x, keep)
        self.hashes[c], self.rows[c] = h, x

    def finish(self, comm) -> list[torch.Tensor]:
        """Each class's sample [k_c, D], in hash order, merged over ranks (``comm.gather``)."""
        parts = comm.gather(list(zip(self.hashes, self.rows, strict=True)))
        out = []
        for c in range(len(self.hashes)):
            self.hashes[c], self.rows[c] = np.zeros(0, np.uint64), None
            for rank_parts in parts:
                h, x = rank_parts[c]
                if x is not None:
                    self._merge(c, h, x)
            out.append(rows(self.rows[c], np.argsort(self.hashes[c], kind="stable")))
        return out
