"""Strategies whose z comes from S centroids per class in the embedding space (k-means, agglomerative, t-SNE).

For every example and every class c: ``assignment='hard'`` gives z[c] = margin · one-hot of the nearest
of class c's centroids (the paper's clustering baselines are most likely hard; with β = 1 and margin 10 the
target puts > 99.9% of class c's mass on that subclass for S ≤ 4); ``'soft'`` gives z[c,s] = −‖h − m_{c,s}‖²
(use ``z_scale='relative'`` with it, so β is in units of the spread of z).

Clusterings that have no out-of-sample rule (agglomerative, t-SNE) run on a capped, deterministic sample of
each class and keep the mean embedding of each cluster as its centroid.
"""

from __future__ import annotations

import logging
from abc import abstractmethod

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy, iter_row_chunks, one_hot_logits
from lelp_lightning.strategies.sampling import ClassSample

ASSIGNMENTS = ("hard", "soft")
log = logging.getLogger(__name__)


def squared_distances(x: torch.Tensor, centers: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """‖x_i − m_k‖² [B,K] for x [B,D], centers [K,D] (expanded form, clamped at 0); ``x_sq``: ‖x_i‖² if known."""
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    d = torch.addmm(x_sq[:, None] + (centers * centers).sum(1), x, centers.T, alpha=-2.0)
    return d.clamp_min_(0)


class CentroidStrategy(SubclassStrategy):
    """z from the S centroids of each class: hard (nearest, as a one-hot logit) or soft (−squared distance)."""

    def __init__(self, num_subclasses: int = 4, assignment: str = "hard", margin: float = 10.0,
                 z_scale: str = "absolute", seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, z_scale, seed, chunk_size)
        if assignment not in ASSIGNMENTS:
            raise LelpError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}.")
        if not margin > 0:
            raise LelpError(f"margin (the logit of a hard assignment) must be > 0, got {margin}.")
        self.assignment = assignment
        self.margin = margin
        self._centroids: torch.Tensor | None = None  # [C,S,D] float64

    @property
    def centroids(self) -> torch.Tensor:
        """The fitted centroids [C,S,D]."""
        self._check_fitted()
        return self._centroids

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        C, S, D = self._centroids.shape
        d = squared_distances(x, self._centroids.reshape(C * S, D)).view(-1, C, S)
        return one_hot_logits(d.argmin(-1), S, self.margin) if self.assignment == "hard" else -d

    def _state(self) -> dict[str, torch.Tensor]:
        return {"centroids": self._centroids}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._centroids = state["centroids"]


class SampleClusteringStrategy(CentroidStrategy):
    """Clusters at most ``max_rows`` rows per class (a uniform sample fixed by the seed), then nearest centroid."""

    def __init__(self, num_subclasses: int = 4, max_rows: int = 5000, assignment: str = "hard",
                 margin: float = 10.0, z_scale: str = "absolute", seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, assignment, margin, z_scale, seed, chunk_size)
        if max_rows < num_subclasses:
            raise LelpError(f"max_rows must be at least num_subclasses={num_subclasses}, got {max_rows}.")
        self.max_rows = max_rows

    @abstractmethod
    def _cluster(self, x: np.ndarray) -> np.ndarray:
        """Cluster labels in [0, S) for the rows x [n,D] of one class."""

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        sample = ClassSample(self.num_classes, self.max_rows, self.seed)
        for _, x, y, chunk_rows in iter_row_chunks(embeddings, labels, rows, self.chunk_size):
            sample.update(x, y, chunk_rows.row_ids)
        counts = np.bincount(labels, minlength=self.num_classes)
        centroids = []
        for c, xc in enumerate(sample.finish(self.comm)):
            xc = xc.double()
            if counts[c] > self.max_rows:
                log.warning("%s: class %d has %d training rows, above max_rows=%d; clustering a uniform sample of "
                            "%d of them (the method's cost grows with N²).", self.registered_name, c, counts[c],
                            self.max_rows, self.max_rows)
            assigned = torch.from_numpy(np.asarray(self._cluster(xc.numpy()), dtype=np.int64))
            sums = torch.zeros(self.num_subclasses, xc.shape[1], dtype=torch.float64).index_add_(0, assigned, xc)
            sizes = torch.bincount(assigned, minlength=self.num_subclasses).to(torch.float64)[:, None]
            centroids.append(torch.where(sizes > 0, sums / sizes.clamp(min=1), xc.mean(0)))
        self._centroids = torch.stack(centroids)
