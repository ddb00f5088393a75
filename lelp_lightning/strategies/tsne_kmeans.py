"""t-SNE + k-means per class (docs/methods.md; the paper's vision ablation).

Each class's rows are mapped to ``tsne_dim`` dimensions by scikit-learn's t-SNE (PCA init, ``perplexity``
capped at (n − 1)/3, seeded) and clustered there by k-means (``n_init`` k-means++ starts). t-SNE is O(N²),
so at most ``max_rows`` rows per class are used (a uniform sample fixed by the seed; a warning names the
class when the cap applies). t-SNE has no out-of-sample map, so each cluster's mean *embedding* becomes a
centroid and z is the nearest-centroid rule of :mod:`lelp_lightning.strategies.centroids`.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.manifold import TSNE

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK
from lelp_lightning.strategies.centroids import SampleClusteringStrategy, squared_distances
from lelp_lightning.strategies.kmeans import kmeans_on_sample


class TSNEKMeansStrategy(SampleClusteringStrategy, name="tsne_kmeans",
                         description="t-SNE map of each class (capped N), k-means in the map; nearest-centroid z."):
    """k-means on a per-class t-SNE map; see the module docstring."""

    def __init__(self, num_subclasses: int = 4, max_rows: int = 2000, perplexity: float = 30.0, tsne_dim: int = 2,
                 n_init: int = 4, assignment: str = "hard", margin: float = 10.0, z_scale: str = "absolute",
                 seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, max_rows, assignment, margin, z_scale, seed, chunk_size)
        if not perplexity > 0 or tsne_dim not in (1, 2, 3) or n_init < 1:
            raise LelpError(f"t-SNE needs perplexity > 0, tsne_dim in 1..3 and n_init >= 1, got {perplexity}, "
                            f"{tsne_dim}, {n_init}.")
        self.perplexity = perplexity
        self.tsne_dim = tsne_dim
        self.n_init = n_init

    def _cluster(self, x: np.ndarray) -> np.ndarray:
        perplexity = min(self.perplexity, max(1.0, (x.shape[0] - 1) / 3))
        mapped = TSNE(n_components=self.tsne_dim, perplexity=perplexity, init="pca",
                      random_state=self.seed).fit_transform(x)
        m = torch.from_numpy(np.asarray(mapped, dtype=np.float64))
        centers = kmeans_on_sample(m, self.num_subclasses, self.n_init, 300, 1e-4, self.seed)
        return squared_distances(m, centers).argmin(1).numpy()
