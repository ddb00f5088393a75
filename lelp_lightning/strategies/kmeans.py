"""k-means per class: S centroids fitted on class c's training rows (docs/methods.md, "kmeans").

Fitting, per class, memory flat in N:
  1. a uniform sample of ``sample_size`` rows (bottom-k of a per-row hash, so it does not depend on row order
     or on DDP sharding);
  2. greedy k-means++ seedings on the sample, each followed by Lloyd iterations on the sample: ``n_init``
     of them for a class with at most ``sample_size`` rows, which is done here (this is exact k-means on all
     its rows, and the run with the lowest inertia is kept); ``max(sample_starts, n_init)`` for a larger class,
     whose ``n_init`` best (lowest inertia on the sample) go on to step 3. A start on the sample is cheap,
     while one that lands in a poor basin (two centroids in one mode, one centroid on two) costs full passes
     and stays there: on the benchmark's blobs about 3 starts in 10 do, so 3 starts leave a class in it
     about 2% of the time, 10 screened starts a few times in 10⁶;
  3. Lloyd iterations over all rows, chunk by chunk, for the ``n_init`` runs at once (one read of each
     chunk serves every run): assign each row to its class's nearest centroid, sum the rows per centroid
     (in the embeddings' own precision per chunk, float64 across chunks, summed over DDP ranks), move the
     centroids, until the squared shift is at most ``tol`` × the class's mean feature variance
     (scikit-learn's criterion), or a pass lowers the inertia by less than ``tol`` relative (a pass costs a
     read of the data, so a run crawling through a long tail stops), or ``max_iter`` passes; the run with
     the lowest inertia on all rows is kept, as scikit-learn's ``n_init``. An empty cluster keeps its centroid.
"""

from __future__ import annotations

import math

import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, column_mean, iter_chunks, iter_row_chunks
from lelp_lightning.strategies.centroids import CentroidStrategy, squared_distances
from lelp_lightning.strategies.sampling import ClassSample


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (2 + log k candidates per step, as scikit-learn): k rows of x [n,D]."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    centers = [x[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    closest = squared_distances(x, centers[0][None], x_sq).squeeze(1)
    potential = closest.sum()
    for _ in range(1, k):
        draws = torch.rand(trials, generator=generator, dtype=torch.float64) * potential
        candidates = torch.searchsorted(torch.cumsum(closest, 0), draws).clamp_(max=n - 1)
        d = torch.minimum(closest[None], squared_distances(x, x[candidates], x_sq).T)  # [trials, n]
        best = int(d.sum(1).argmin())
        closest, potential = d[best], d[best].sum()
        centers.append(x[candidates[best]])
    return torch.stack(centers)


def lloyd(x: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float,
          tol_rel: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd's algorithm on in-memory rows x [n,D] from ``centers``; returns (centers, labels, inertia).

    Stops when no label changes, the squared shift is at most ``tol``, or an iteration lowers the inertia
    by less than ``tol_rel`` relative.
    """
    k = centers.shape[0]
    x_sq = (x * x).sum(1)
    labels, inertia = None, math.inf
    for _ in range(max_iter):
        nearest, new_labels = squared_distances(x, centers, x_sq).min(1)
        previous, inertia = inertia, float(nearest.sum())
        if labels is not None and (torch.equal(new_labels, labels) or previous - inertia <= tol_rel * inertia):
            break
        labels = new_labels
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        sizes = torch.bincount(labels, minlength=k).to(x.dtype)[:, None]
        moved = torch.where(sizes > 0, sums / sizes.clamp(min=1), centers)
        shift = ((moved - centers) ** 2).sum()
        centers = moved
        if shift <= tol:
            break
    nearest, labels = squared_distances(x, centers, x_sq).min(1)
    return centers, labels, float(nearest.sum())


def mean_feature_variance(x: torch.Tensor) -> float:
    """The mean over features of each feature's (population) variance: the scale of scikit-learn's ``tol``."""
    centred = (x - column_mean(x)).reshape(-1)
    return float(torch.dot(centred, centred)) / x.numel()  # BLAS dot: 6× faster than a float64 sum; a tolerance's scale


def sample_starts_for(samples: list[torch.Tensor], sample_size: int, starts: int, sample_starts: int) -> list[int]:
    """k-means++ starts per class: ``starts`` where the sample is every row of the class, at least
    ``sample_starts`` where it is a sample (screening starts there is cheap; see the module docstring)."""
    return [starts if len(xc) < sample_size else max(starts, sample_starts) for xc in samples]


def kmeans_runs(x: torch.Tensor, k: int, n_init: int, max_iter: int, tol: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_init`` k-means++ + Lloyd runs on x [n,D] (``tol`` relative to the mean feature variance):
    (centers [n_init,k,D], inertia [n_init])."""
    tol_abs = tol * mean_feature_variance(x)
    runs = []
    for i in range(n_init):
        gen = torch.Generator().manual_seed(int(seed) * 7919 + i)
        runs.append(lloyd(x, kmeans_plusplus(x, k, gen), max_iter, tol_abs, tol))
    return torch.stack([r[0] for r in runs]), torch.tensor([r[2] for r in runs], dtype=torch.float64)


def kmeans_on_sample(x: torch.Tensor, k: int, n_init: int, max_iter: int, tol: float, seed: int) -> torch.Tensor:
    """The centers [k,D] of the best of ``n_init`` k-means++ + Lloyd runs on x [n,D]."""
    centers, inertia = kmeans_runs(x, k, n_init, max_iter, tol, seed)
    return centers[int(inertia.argmin())]


def class_samples(strategy, embeddings, labels, rows, size: int) -> list[torch.Tensor]:
    """Each class's uniform sample of at most ``size`` rows, merged over DDP ranks (float32 rows stay float32:
    k-means on them runs twice as fast, and only seeds the passes over all rows)."""
    sample = ClassSample(strategy.num_classes, size, strategy.seed)
    for _, x, y, chunk_rows in iter_row_chunks(embeddings, labels, rows, strategy.chunk_size, dtype=None):
        sample.update(x if x.dtype in (torch.float32, torch.float64) else x.double(), y, chunk_rows.row_ids)
    return sample.finish(strategy.comm)


def lloyd_on_chunks(strategy, embeddings, labels, centroids: torch.Tensor, active: torch.Tensor,
                    tol_abs: torch.Tensor, tol_rel: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd passes over all rows for R runs at once, on the (run, class) pairs marked ``active`` [R,C].

    ``centroids`` [R,C,S,D]; returns the moved centroids and each (run, class)'s inertia [R,C] at its last pass.
    """
    R, C, S, D = centroids.shape
    centroids = centroids.double()
    inertia = torch.full((R, C), math.inf, dtype=torch.float64)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        sums = torch.zeros(R * C * S, D, dtype=torch.float64)
        sizes = torch.zeros(R * C * S, dtype=torch.float64)
        pass_inertia = torch.zeros(R * C, dtype=torch.float64)
        for x, y in iter_chunks(embeddings, labels, strategy.chunk_size, dtype=None):
            x = x if x.dtype in (torch.float32, torch.float64) else x.double()
            d = squared_distances(x, centroids.reshape(-1, D).to(x.dtype)).view(-1, R, C, S)
            nearest, assigned = d[torch.arange(len(y)), :, y].min(-1)  # [B,R]
            run_class = torch.arange(R)[None, :] * C + y[:, None]  # [B,R]
            slot = run_class * S + assigned  # [B,R]
            members = torch.zeros(len(y), R * C * S, dtype=x.dtype).scatter_(1, slot, 1.0)  # one-hot per run
            sums += (members.T @ x).double()
            sizes += members.sum(0).double()
            pass_inertia.index_add_(0, run_class.reshape(-1), nearest.reshape(-1).double())
        strategy.comm.sum_(sums, sizes, pass_inertia)
        sums, sizes = sums.view(R, C, S, D), sizes.view(R, C, S, 1)
        moved = torch.where(sizes > 0, sums / sizes.clamp(min=1), centroids)
        moved[~active] = centroids[~active]
        pass_inertia = pass_inertia.view(R, C)
        improving = inertia - pass_inertia > tol_rel * pass_inertia
        inertia = torch.where(active, pass_inertia, inertia)
        active = active & improving & (((moved - centroids) ** 2).sum((2, 3)) > tol_abs)
        centroids = moved
    return centroids, inertia


class KMeansStrategy(CentroidStrategy, name="kmeans",
                     description="k-means per class: S centroids, hard (nearest) or soft (−squared distance) z."):
    """k-means on each class's training rows; see the module docstring for the chunked fit."""

    shardable = True

    def __init__(self, num_subclasses: int = 4, assignment: str = "hard", margin: float = 10.0, n_init: int = 3,
                 max_iter: int = 300, tol: float = 1e-4, sample_size: int = 8192, sample_starts: int = 10,
                 z_scale: str = "absolute", seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, assignment, margin, z_scale, seed, chunk_size)
        if n_init < 1 or max_iter < 1 or sample_starts < 1:
            raise LelpError(f"n_init, max_iter and sample_starts must be >= 1, got n_init={n_init}, "
                            f"max_iter={max_iter}, sample_starts={sample_starts}.")
        if sample_size < num_subclasses:
            raise LelpError(f"sample_size must be at least num_subclasses={num_subclasses}, got {sample_size}.")
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.sample_size = sample_size
        self.sample_starts = sample_starts

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        samples = class_samples(self, embeddings, labels, rows, self.sample_size)
        whole = torch.tensor([len(xc) < self.sample_size for xc in samples])  # the sample is every row
        starts = sample_starts_for(samples, self.sample_size, self.n_init, self.sample_starts)
        runs = []
        for c, xc in enumerate(samples):
            centers, inertia = kmeans_runs(xc, self.num_subclasses, starts[c], self.max_iter, self.tol,
                                           self.seed * 1_000_003 + c)
            best = torch.argsort(inertia, stable=True)[: self.n_init]  # screened on the sample
            runs.append((centers[best], inertia[best]))
        centroids = torch.stack([r[0] for r in runs], 1)  # [R,C,S,D]
        sample_inertia = torch.stack([r[1] for r in runs], 1)  # [R,C]
        tol_abs = torch.tensor([self.tol * mean_feature_variance(xc) for xc in samples])
        active = (~whole)[None, :].expand(self.n_init, -1).clone()
        centroids, inertia = lloyd_on_chunks(self, embeddings, labels, centroids, active, tol_abs, self.tol,
                                             self.max_iter)
        best = torch.where(whole[None, :], sample_inertia, inertia).argmin(0)  # [C]
        self._centroids = centroids[best, torch.arange(self.num_classes)].double()
