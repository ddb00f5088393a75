"""LELP (Loo et al. 2024, arXiv 2409.20449) and its ablations: PCA only, random projections.

Per class c, on the training rows of class c (docs/methods.md, LELP steps 1-5):
  1. null-space projection h̃ = P h, P = I − Wᵀ(WWᵀ)⁺W (``null_space``): drop what the classifier reads;
  2. top-S principal directions V_c of the projected class covariance (``directions='pca'``), or S
     Gaussian directions (``directions='random'``);
  3. Haar-random rotation U_c = V_c Q_c (``rotation``: 'per_class' (default), 'shared', or 'none');
  4. z[c,s] = u_{c,s}ᵀ (h̃ − μ̃_c) for every example and every class (``center``; open choice, default on).

Fitting uses per-class sufficient statistics only (count, Σh, Σhhᵀ in float64, read in cache-sized blocks),
so memory does not grow with N: a 1.6M × 768 cache needs 2·C·768² doubles. The statistics are summed over
DDP ranks, and the relative z scale is computed from them too, so a fit is one pass over the data. The pass
costs one float32 syrk (XᵀX) per class, as scikit-learn's ``PCA`` on rows in memory; the top-S directions
then come from Lanczos iterations on P Σ P applied as an operator (P never formed), not from a dense
eigensolver: see :func:`top_eigenvectors`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy, class_blocks, column_mean

ROTATIONS = ("per_class", "shared", "none")
LANCZOS_MIN_DIM = 256  # below it LAPACK's dense solver is as fast as Lanczos
# Bytes read per step of the statistics pass: the Gram product dominates it and runs ~20% slower on 1,000-row
# class blocks than on 4,000-row ones at D = 768 (1.37 s vs 1.14 s for 1e5 × 768; no difference at D = 384).
GRAM_BLOCK_BYTES = 24 << 20
DIRECTIONS = ("pca", "random")


def row_space_basis(W: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis Q [D,r] of the rows of W [C,D] (r: W's numerical rank, as ``matrix_rank``), so that
    P = I − QQᵀ = I − Wᵀ(WWᵀ)⁺W is the orthogonal projector onto W's null space."""
    u, sv, _ = torch.linalg.svd(W.T, full_matrices=False)
    return u[:, sv > sv.max() * max(W.shape) * torch.finfo(W.dtype).eps]


def project_out(x: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """P x = x − Q(Qᵀx) for x [D,…] (torch or NumPy): O(D·r) per column where the dense projector costs O(D²)."""
    return x - Q @ (Q.T @ x)


def project_both_sides(m: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """P m P as m − QQᵀm − mQQᵀ + QQᵀmQQᵀ: O(D²·r) instead of the O(D³) of two D×D products."""
    mq = m @ Q
    return m - Q @ mq.T - mq @ Q.T + Q @ (Q.T @ mq) @ Q.T


def haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-distributed n×n orthogonal matrix: QR of a Gaussian matrix with the sign of diag(R) fixed."""
    g = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(n, dtype=torch.float64))


def top_eigenvectors(m: torch.Tensor, k: int, Q: torch.Tensor | None = None) -> torch.Tensor:
    """The eigenvectors [D,k] of the k largest eigenvalues of P m P (symmetric m; P = I − QQᵀ, or I without Q),
    largest first, each signed so that its largest-magnitude entry is positive.

    For D >= ``LANCZOS_MIN_DIM`` and k <= D/8, ARPACK's implicitly restarted Lanczos (tolerance: machine
    precision) needs a few dozen products v ↦ P m P v where LAPACK's subset solver first reduces all of m to
    tridiagonal form: 3–8 ms against 32 ms at D = 768 on covariance-like spectra, to the same eigenvectors
    (angles ~1e-15 rad). Its restarts are capped at about LAPACK's cost; if the top eigenvalues are so close
    that Lanczos has not converged by then, LAPACK's solver (``scipy.linalg.eigh``) answers instead. Both
    read m as symmetric (LAPACK reads one triangle).
    """
    D = m.shape[0]
    vecs = None
    if D >= LANCZOS_MIN_DIM and 8 * k <= D:
        a = m.numpy()
        if Q is None:
            operator = a
        else:
            q = Q.numpy()
            def product(v):  # P m P v
                return project_out(a @ project_out(v, q), q)
            operator = scipy.sparse.linalg.LinearOperator((D, D), matvec=product, matmat=product, dtype=a.dtype)
        ncv = min(D, max(2 * k + 1, 32))
        v0 = np.random.default_rng(0).standard_normal(D)  # fixed: the same m gives the same vectors
        with contextlib.suppress(scipy.sparse.linalg.ArpackNoConvergence):  # LAPACK below
            vals, vecs = scipy.sparse.linalg.eigsh(operator, k=k, which="LA", v0=v0, ncv=ncv, tol=0,
                                                   maxiter=max(2, D // (2 * (ncv - k))))
    if vecs is None:
        dense = m if Q is None else project_both_sides(m, Q)
        vals, vecs = scipy.linalg.eigh(dense.numpy(), subset_by_index=[D - k, D - 1])
    vecs = vecs[:, np.argsort(-vals, kind="stable")]
    signs = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(k)])
    return torch.from_numpy(np.ascontiguousarray(vecs * np.where(signs == 0, 1.0, signs)))


class ClassStatistics:
    """Per-class count, Σh and Σhhᵀ of embeddings, accumulated block by block in float64.

    A block's Gram matrix is computed in the block's own precision (float32 for a teacher cache: twice the
    speed of float64) on the rows minus a shift (the mean of the class's first rows), so rounding is relative
    to the spread of the rows, not to their (often much larger) mean. The sums are kept around the shift and
    converted to raw sums once, in float64, by :meth:`finish`. The shift only affects rounding, so ranks of a
    sharded fit may each use their own.
    """

    def __init__(self, num_classes: int, dim: int):
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.sum = torch.zeros(num_classes, dim, dtype=torch.float64)  # Σ(h − shift) until finish()
        self.outer = torch.zeros(num_classes, dim, dim, dtype=torch.float64)  # Σ(h − shift)(h − shift)ᵀ until finish()
        self._shift: dict[int, torch.Tensor] = {}

    def add(self, c: int, rows: torch.Tensor) -> None:
        """Add rows [n,D] of class c (float32 or float64; the caller gives them up: they are shifted in place)."""
        if c not in self._shift:
            self._shift[c] = column_mean(rows)
        centred = rows.sub_(self._shift[c]).numpy()
        self.count[c] += rows.shape[0]
        self.sum[c] += torch.from_numpy(np.ones(rows.shape[0], centred.dtype) @ centred)  # BLAS gemv
        self.outer[c] += torch.from_numpy(centred.T @ centred)  # NumPy calls BLAS syrk: half a matmul

    def finish(self) -> ClassStatistics:
        """Turn the sums around each class's shift s into raw sums: Σh = r + n·s and
        Σhhᵀ = G + s·rᵀ + r·sᵀ + n·s·sᵀ = G + s·uᵀ + u·sᵀ with u = r + n·s/2 (two rank-1 updates in place)."""
        for c, shift in self._shift.items():
            s, r, n = shift.double(), self.sum[c], self.count[c]
            u = r + (n / 2) * s
            self.outer[c].addr_(s, u).addr_(u, s)
            self.sum[c] = r + n * s
        self._shift = {}
        return self

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.sum, self.outer]

    def mean(self, c: int) -> torch.Tensor:
        return self.sum[c] / self.count[c]

    def second_moment(self, c: int, center: bool) -> torch.Tensor:
        if not center:
            return self.outer[c] / self.count[c]
        mu = self.mean(c)
        return torch.addr(self.outer[c], mu, mu, beta=1 / float(self.count[c]), alpha=-1)


class LinearProjectionStrategy(SubclassStrategy, name="lelp",
                               description="LELP: per-class PCA of null-space-projected teacher embeddings, "
                                           "randomly rotated."):
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
        """Per-class count, Σh, Σhhᵀ of the rows given (summed over ranks in a sharded fit), read block by
        block (:func:`~lelp_lightning.strategies.base.class_blocks`)."""
        stats = ClassStatistics(self.num_classes, embeddings.shape[1])
        for c, rows in class_blocks(embeddings, labels, self.chunk_size, GRAM_BLOCK_BYTES):
            stats.add(c, rows)
        stats.finish()
        self.comm.sum_(*stats.tensors())
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
        Q = row_space_basis(W) if self.null_space else None
        if Q is not None and D - Q.shape[1] < S:
            raise LelpError(f"the null space of the teacher classifier W ({C}×{D}, rank {Q.shape[1]}) has dimension "
                            f"{D - Q.shape[1]} < S={S}: nothing is left to split along; use null_space=false or "
                            "fewer subclasses.")
        project = (lambda v: v) if Q is None else (lambda v: project_out(v, Q))
        gen = torch.Generator().manual_seed(int(self.seed))
        shared_q = haar_orthogonal(S, gen) if self.rotation == "shared" else None
        columns, offsets = [], []
        for c in range(C):
            class_gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + c)
            if self.directions == "pca":
                V = top_eigenvectors(stats.second_moment(c, self.center), S, Q)
            else:
                V = project(torch.randn(D, S, generator=class_gen, dtype=torch.float64))
                V = V / V.norm(dim=0, keepdim=True).clamp(min=1e-12)
            if self.rotation == "per_class":
                V = V @ haar_orthogonal(S, class_gen)
            elif self.rotation == "shared":
                V = V @ shared_q
            U = project(V)  # z = Uᵀ h̃ = (P U)ᵀ h, exactly
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
