"""LELP (Loo et al. 2024, arXiv 2409.20449) and its ablations: PCA only, random projections.

Per class c, on the training rows of class c (METHODS.md, LELP steps 1-5):
  1. null-space projection h̃ = P h, P = I − Wᵀ(WWᵀ)⁺W (``null_space``): drop what the classifier reads;
  2. top-S principal directions V_c of the projected class covariance (``directions='pca'``), or S
     Gaussian directions (``directions='random'``);
  3. Haar-random rotation U_c = V_c Q_c (``rotation``: 'per_class' (default), 'shared', or 'none');
  4. z[c,s] = u_{c,s}ᵀ (h̃ − μ̃_c) for every example and every class (``center``; open choice, default on).

Fitting uses per-class sufficient statistics only (count, Σh, Σhhᵀ in float64, read in chunks), so memory
does not grow with N: a 1.6M × 768 cache needs 2·C·768² doubles. The statistics are summed over DDP ranks,
and the relative z scale is computed from them too, so a fit is one pass over the data.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy

ROTATIONS = ("per_class", "shared", "none")
DIRECTIONS = ("pca", "random")


def null_space_projector(W: torch.Tensor) -> torch.Tensor:
    """P = I − Wᵀ(WWᵀ)⁺W: the orthogonal projector onto the null space of W [C,D]."""
    D = W.shape[1]
    return torch.eye(D, dtype=W.dtype) - W.T @ torch.linalg.pinv(W @ W.T) @ W


def project_both_sides(m: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """P m P for the null-space projector P of W [C,D], as m − QQᵀm − mQQᵀ + QQᵀmQQᵀ with Q an orthonormal
    basis of W's rows: O(D²·C) instead of the O(D³) of two D×D products."""
    u, sv, _ = torch.linalg.svd(W.T, full_matrices=False)
    Q = u[:, sv > sv.max() * max(W.shape) * torch.finfo(W.dtype).eps]
    mq = m @ Q
    return m - Q @ mq.T - mq @ Q.T + Q @ (Q.T @ mq) @ Q.T


def haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-distributed n×n orthogonal matrix: QR of a Gaussian matrix with the sign of diag(R) fixed."""
    g = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(n, dtype=torch.float64))


def top_eigenvectors(m: torch.Tensor, k: int) -> torch.Tensor:
    """The eigenvectors [D,k] of the k largest eigenvalues of symmetric m, largest first (LAPACK's subset
    solver: only k vectors are computed)."""
    D = m.shape[0]
    vals, vecs = scipy.linalg.eigh(m.numpy(), subset_by_index=[D - k, D - 1])
    return torch.from_numpy(vecs[:, ::-1].copy())  # a copy: a [D,1] reversed view keeps its negative stride


class ClassStatistics:
    """Per-class count, Σh and Σhhᵀ of embeddings, accumulated chunk by chunk in float64.

    A chunk's Gram matrix is computed in the chunk's own precision (float32 for a teacher cache: twice the
    speed of float64) on the rows minus a shift (the mean of the class's first rows), and the shift's part is
    added back in float64, so rounding is relative to the spread of the rows, not to their (often much
    larger) mean. The shift only affects rounding, so ranks of a sharded fit may each use their own.
    """

    def __init__(self, num_classes: int, dim: int):
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.sum = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.outer = torch.zeros(num_classes, dim, dim, dtype=torch.float64)
        self._shift: dict[int, torch.Tensor] = {}

    def add(self, c: int, rows: torch.Tensor) -> None:
        """Add rows [n,D] of class c (float32 or float64; the caller gives them up: they are shifted in place)."""
        n = rows.shape[0]
        if c not in self._shift:
            self._shift[c] = rows.mean(0)
        centred = rows.sub_(self._shift[c].to(rows.dtype))
        residual, shift = centred.sum(0).double(), self._shift[c].double()
        self.count[c] += n
        self.sum[c] += residual + n * shift
        gram = torch.from_numpy(centred.numpy().T @ centred.numpy())  # NumPy calls BLAS syrk: half a matmul
        self.outer[c] += (gram.double() + torch.outer(shift, residual) + torch.outer(residual, shift)
                          + n * torch.outer(shift, shift))

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.sum, self.outer]

    def mean(self, c: int) -> torch.Tensor:
        return self.sum[c] / self.count[c]

    def second_moment(self, c: int, center: bool) -> torch.Tensor:
        m = self.outer[c] / self.count[c]
        if center:
            mu = self.mean(c)
            m = m - torch.outer(mu, mu)
        return m


class LinearProjectionStrategy(SubclassStrategy, name="lelp",
                               description="LELP: per-class PCA of null-space-projected teacher embeddings, randomly rotated."):
    """LELP's linear projections; every step is an option (see the module docstring)."""

    shardable = True

    def __init__(self, num_subclasses: int = 4, null_space: bool = True, center: bool = True,
                 rotation: str = "per_class", directions: str = "pca", z_scale: str = "relative", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, z_scale, seed, chunk_size)
        if rotation not in ROTATIONS:
            raise LelpError(f"rotation must be one of {ROTATIONS}, got {rotation!r}.")
        if directions not in DIRECTIONS:
            raise LelpError(f"directions must be one of {DIRECTIONS}, got {directions!r}.")
        self.null_space = null_space
        self.center = center
        self.rotation = rotation
        self.directions = directions
        self._projection: torch.Tensor | None = None  # [D, C·S]
        self._offset: torch.Tensor | None = None  # [C·S]
        self._stats: ClassStatistics | None = None  # kept between _fit and the z scale of one fit

    def statistics(self, embeddings: np.ndarray, labels: np.ndarray) -> ClassStatistics:
        """Per-class count, Σh, Σhhᵀ of the rows given (summed over ranks in a sharded fit)."""
        stats = ClassStatistics(self.num_classes, embeddings.shape[1])
        for lo in range(0, embeddings.shape[0], self.chunk_size):
            block, y = embeddings[lo:lo + self.chunk_size], np.asarray(labels[lo:lo + self.chunk_size])
            for c in np.unique(y).tolist():  # each class's rows read straight into their own array
                rows = np.asarray(block[y == c])  # fancy indexing copies: the rows are ours to centre
                stats.add(c, torch.from_numpy(rows if rows.dtype in (np.float32, np.float64) else rows.astype(np.float64)))
        self._comm.sum_(*stats.tensors())
        return stats

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        stats = self.statistics(embeddings, labels)
        self.fit_statistics(stats, W)
        self._stats = stats if self.z_scale == "relative" else None

    def _own_class_moments(self, embeddings, labels, rows):
        """Σz, Σz², count over each class's own rows, from the statistics (z is linear in h): no second pass."""
        stats, self._stats = self._stats, None
        C, S = self.num_classes, self.num_subclasses
        total = torch.zeros(C, dtype=torch.float64)
        total_sq = torch.zeros(C, dtype=torch.float64)
        for c in range(C):
            U, off = self.directions_of(c), self._offset[c * S:(c + 1) * S]
            mean_z = U.T @ stats.mean(c) - off  # [S]
            var_z = torch.einsum("ds,de,es->s", U, stats.second_moment(c, center=True), U)
            total[c] = stats.count[c] * mean_z.sum()
            total_sq[c] = stats.count[c] * (var_z + mean_z ** 2).sum()
        return total, total_sq, stats.count * S

    def fit_statistics(self, stats: ClassStatistics, W: torch.Tensor) -> None:
        """The directions from sufficient statistics (also the entry point after a distributed all-reduce)."""
        C, D, S = self.num_classes, W.shape[1], self.num_subclasses
        if self.null_space:
            rank = int(torch.linalg.matrix_rank(W))
            if D - rank < S:
                raise LelpError(f"the null space of the teacher classifier W ({C}×{D}, rank {rank}) has dimension "
                                f"{D - rank} < S={S}: nothing is left to split along; use null_space=false or fewer subclasses.")
            P = null_space_projector(W)
        else:
            P = torch.eye(D, dtype=torch.float64)
        gen = torch.Generator().manual_seed(int(self.seed))
        shared_q = haar_orthogonal(S, gen) if self.rotation == "shared" else None
        columns, offsets = [], []
        for c in range(C):
            class_gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + c)
            if self.directions == "pca":
                moment = stats.second_moment(c, self.center)
                cov = project_both_sides(moment, W) if self.null_space else moment
                V = top_eigenvectors((cov + cov.T) / 2, S)
            else:
                V = P @ torch.randn(D, S, generator=class_gen, dtype=torch.float64)
                V = V / V.norm(dim=0, keepdim=True).clamp(min=1e-12)
            if self.rotation == "per_class":
                V = V @ haar_orthogonal(S, class_gen)
            elif self.rotation == "shared":
                V = V @ shared_q
            U = P @ V  # z = Uᵀ h̃ = (P U)ᵀ h, exactly
            columns.append(U)
            offsets.append(U.T @ stats.mean(c) if self.center else torch.zeros(S, dtype=torch.float64))
        self._projection = torch.cat(columns, dim=1)
        self._offset = torch.cat(offsets)

    def directions_of(self, c: int) -> torch.Tensor:
        """The S directions [D,S] of class c (in the original embedding space)."""
        if self._projection is None:
            self._check_fitted()
        S = self.num_subclasses
        return self._projection[:, c * S:(c + 1) * S]

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        return (x @ self._projection - self._offset).view(x.shape[0], self.num_classes, self.num_subclasses)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"projection": self._projection, "offset": self._offset}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._projection, self._offset = state["projection"], state["offset"]


class PCAStrategy(LinearProjectionStrategy, name="pca",
                  description="PCA only: LELP without the null-space projection and the random rotation."):
    """Per-class PCA of the raw embeddings (the paper's 'PCA only' ablation)."""

    def __init__(self, num_subclasses: int = 4, null_space: bool = False, center: bool = True,
                 rotation: str = "none", directions: str = "pca", z_scale: str = "relative", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, null_space, center, rotation, directions, z_scale, seed, chunk_size)


class RandomProjectionStrategy(LinearProjectionStrategy, name="random_projection",
                               description="Random Gaussian directions in the null space instead of principal ones."):
    """Gaussian directions instead of PCA (the paper's 'random projections' ablation)."""

    def __init__(self, num_subclasses: int = 4, null_space: bool = True, center: bool = True,
                 rotation: str = "none", directions: str = "random", z_scale: str = "relative", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, null_space, center, rotation, directions, z_scale, seed, chunk_size)
