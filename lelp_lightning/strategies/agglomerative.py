"""Agglomerative clustering per class (docs/methods.md): the paper's hierarchical-clustering baseline.

scikit-learn's ``AgglomerativeClustering`` (``linkage``: 'ward' by default) cuts each class's tree into S
clusters. It is O(N²) in memory, so it runs on at most ``max_rows`` rows per class (a uniform sample fixed by
the seed; a warning names the class when the cap applies). Each cluster's mean embedding becomes a centroid
and z is the nearest-centroid rule of :mod:`lelp_lightning.strategies.centroids` for every row and split.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK
from lelp_lightning.strategies.centroids import SampleClusteringStrategy

LINKAGES = ("ward", "complete", "average", "single")


class AgglomerativeStrategy(SampleClusteringStrategy, name="agglomerative",
                            description="Agglomerative (Ward) clustering per class on a capped sample; "
                                        "nearest-centroid z."):
    """Hierarchical clustering of each class into S clusters; see the module docstring."""

    def __init__(self, num_subclasses: int = 4, linkage: str = "ward", max_rows: int = 5000, assignment: str = "hard",
                 margin: float = 10.0, z_scale: str = "absolute", seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, max_rows, assignment, margin, z_scale, seed, chunk_size)
        if linkage not in LINKAGES:
            raise LelpError(f"linkage must be one of {LINKAGES}, got {linkage!r}.")
        self.linkage = linkage

    def _cluster(self, x: np.ndarray) -> np.ndarray:
        return AgglomerativeClustering(n_clusters=self.num_subclasses, linkage=self.linkage).fit_predict(x)
