"""Gaussian mixture per class (docs/methods.md, "gmm"): z[c,s] = log posterior of component s.

For every example and every class c, z[c] = log p(s | h, class c's mixture), so softmax(z[c]/β) with β = 1
(and ``z_scale='absolute'``, the default) is exactly the mixture's posterior.

Fitting is EM with full passes over the chunked rows, memory flat in N, as scikit-learn's
``GaussianMixture(init_params='kmeans')``: the components start from k-means on a uniform sample of each class
(see :mod:`lelp_lightning.strategies.kmeans`; the best of ``init_starts`` k-means++ starts, or of
``max(init_starts, sample_starts)`` when the class has more rows than the sample, where scikit-learn's k-means
on all rows uses
one: a start on a sample is cheap, and an unlucky one leaves EM crawling out of a merged pair of modes, one
full pass after another) with hard responsibilities; then each pass computes the
responsibilities under the current parameters and sums their sufficient statistics (Σr, Σr·h, Σr·h², or for
full covariance Σr·(h − μ_s) and Σr·(h − μ_s)(h − μ_s)ᵀ around the component's current mean, as exact as
scikit-learn's centring), and the M-step adds ``reg_covar`` to the covariances. Stops when every class's mean
log-likelihood changes by less than ``tol`` or after ``max_iter`` passes. As scikit-learn, a pass computes
in the embeddings' own precision (float32 for a teacher cache); its sums are accumulated in float64 across
chunks and DDP ranks, on rows shifted by their class's sample mean so that nothing large cancels.
"""

from __future__ import annotations

import math

import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy, class_blocks, column_mean
from lelp_lightning.strategies.centroids import squared_distances
from lelp_lightning.strategies.kmeans import class_samples, kmeans_on_sample, sample_starts_for

COVARIANCE_TYPES = ("diag", "full")
_EPS = 10 * torch.finfo(torch.float64).eps


class GaussianMixtureStrategy(SubclassStrategy, name="gmm",
                              description="Gaussian mixture per class (diagonal or full covariance): "
                                          "z = log posterior."):
    """S-component Gaussian mixture on each class's training rows, fitted by chunked EM."""

    shardable = True

    def __init__(self, num_subclasses: int = 4, covariance_type: str = "diag", max_iter: int = 100, tol: float = 1e-3,
                 reg_covar: float = 1e-6, init_starts: int = 3, sample_size: int = 8192, sample_starts: int = 10,
                 z_scale: str = "absolute", seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, z_scale, seed, chunk_size)
        if covariance_type not in COVARIANCE_TYPES:
            raise LelpError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}.")
        if max_iter < 1 or reg_covar < 0 or init_starts < 1 or sample_starts < 1:
            raise LelpError(f"max_iter, init_starts and sample_starts must be >= 1 and reg_covar >= 0, got {max_iter}, "
                            f"{init_starts}, {sample_starts} and {reg_covar}.")
        if sample_size < num_subclasses:
            raise LelpError(f"sample_size must be at least num_subclasses={num_subclasses}, got {sample_size}.")
        self.covariance_type = covariance_type
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.init_starts = init_starts
        self.sample_size = sample_size
        self.sample_starts = sample_starts
        self._weights = self._means = self._covariances = self._reference = None
        self._precision: torch.Tensor | None = None  # diag: 1/var [C,S,D]; full: Cholesky of the precision [C,S,D,D]
        self._log_det: torch.Tensor | None = None  # log det of the precision's Cholesky factor [C,S]

    # -- densities -----------------------------------------------------------------------------------------
    def _set_derived(self) -> None:
        if self.covariance_type == "diag":
            self._precision = 1.0 / self._covariances
            self._log_det = -0.5 * torch.log(self._covariances).sum(-1)
            return
        try:
            chol = torch.linalg.cholesky(self._covariances)
        except torch.linalg.LinAlgError:
            raise LelpError("a GMM component covariance is not positive definite (a collapsed component); "
                            "raise reg_covar or lower num_subclasses.") from None
        eye = torch.eye(chol.shape[-1], dtype=torch.float64).expand_as(chol)
        self._precision = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
        self._log_det = torch.log(torch.diagonal(self._precision, dim1=-2, dim2=-1)).sum(-1)

    def _log_joint(self, xc: torch.Tensor, c: int, xc_sq: torch.Tensor | None = None,
                   diffs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """log w_s + log N(xc | μ_s, Σ_s) [n,S] in xc's precision, for rows xc already shifted by class c's
        reference (``xc_sq`` = xc² for diagonal, ``diffs`` = [xc − μ_s] for full covariances, if at hand)."""
        D, dtype = xc.shape[1], xc.dtype
        mu, prec = self._means[c].to(dtype), self._precision[c].to(dtype)
        if self.covariance_type == "diag":
            xc_sq = xc * xc if xc_sq is None else xc_sq
            maha = torch.addmm((mu * mu * prec).sum(1), xc_sq, prec.T) - 2 * xc @ (mu * prec).T
        else:
            diffs = [xc - mu[s] for s in range(mu.shape[0])] if diffs is None else diffs
            maha = torch.stack([((diff @ prec[s]) ** 2).sum(1) for s, diff in enumerate(diffs)], 1)
        log_norm = (torch.log(self._weights[c]) + self._log_det[c]).to(dtype)
        return log_norm - 0.5 * (D * math.log(2 * math.pi) + maha.clamp_min(0))

    def class_log_likelihood(self, embeddings) -> torch.Tensor:
        """log p(h | class c's mixture) [B,C] for embeddings [B,D]."""
        self._check_fitted()
        x = torch.as_tensor(embeddings, dtype=torch.float64)
        return torch.stack([torch.logsumexp(self._log_joint(x - self._reference[c], c), 1)
                            for c in range(self.num_classes)], 1)

    def mixture(self, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights [S], means [S,D], covariances [S,D] or [S,D,D]) of class c."""
        self._check_fitted()
        return self._weights[c], self._means[c] + self._reference[c], self._covariances[c]

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        return torch.stack([torch.log_softmax(self._log_joint(x - self._reference[c], c), 1)
                            for c in range(self.num_classes)], 1)

    # -- fitting -------------------------------------------------------------------------------------------
    def _fit(self, embeddings, labels, W, b, rows) -> None:
        C, S, D = self.num_classes, self.num_subclasses, embeddings.shape[1]
        samples = class_samples(self, embeddings, labels, rows, self.sample_size)
        self._reference = torch.stack([column_mean(xc).double() for xc in samples])  # a shift: near the mean will do
        starts = sample_starts_for(samples, self.sample_size, self.init_starts, self.sample_starts)
        centers = torch.stack([kmeans_on_sample(xc - self._reference[c].to(xc.dtype), S, starts[c], 300, 1e-4,
                                                self.seed * 1_000_003 + c).double() for c, xc in enumerate(samples)])
        self._em_pass(embeddings, labels, centers, C, S, D)  # M-step from the k-means assignment
        previous = None
        for _ in range(self.max_iter):
            sizes, ll = self._em_pass(embeddings, labels, None, C, S, D)
            mean_ll = ll / sizes  # under the parameters before this pass's M-step, as scikit-learn
            if previous is not None and bool(((mean_ll - previous).abs() < self.tol).all()):
                break
            previous = mean_ll

    def _em_pass(self, embeddings, labels, centers, C, S, D) -> tuple[torch.Tensor, torch.Tensor]:
        """One E-step over all rows (hard assignment to ``centers`` when given) and the M-step from its sums."""
        full = self.covariance_type == "full"
        around = centers if centers is not None else self._means  # full: sums are taken around these [C,S,D]
        nk = torch.zeros(C, S, dtype=torch.float64)
        sx = torch.zeros(C, S, D, dtype=torch.float64)
        sxx = torch.zeros(C, S, D, D, dtype=torch.float64) if full else torch.zeros(C, S, D, dtype=torch.float64)
        ll = torch.zeros(C, dtype=torch.float64)
        sizes = torch.zeros(C, dtype=torch.float64)
        for c, xc in class_blocks(embeddings, labels, self.chunk_size):  # xc: a reused buffer, shifted in place
            xc -= self._reference[c].to(xc.dtype)
            sizes[c] += xc.shape[0]
            diffs = [xc - around[c, s].to(xc.dtype) for s in range(S)] if full else None
            xc_sq = None if full else xc * xc
            if centers is not None:
                resp = torch.nn.functional.one_hot(squared_distances(xc, centers[c].to(xc.dtype)).argmin(1), S)
                resp = resp.to(xc.dtype)
            else:
                log_joint = self._log_joint(xc, c, xc_sq, diffs)
                log_norm = torch.logsumexp(log_joint, 1, keepdim=True)
                ll[c] += log_norm.sum(dtype=torch.float64)
                resp = torch.exp(log_joint - log_norm)
            nk[c] += resp.sum(0, dtype=torch.float64)
            if full:
                for s, diff in enumerate(diffs):
                    weighted = diff * resp[:, s:s + 1]
                    sx[c, s] += weighted.sum(0, dtype=torch.float64)
                    sxx[c, s] += (weighted.T @ diff).double()
            else:
                sx[c] += (resp.T @ xc).double()
                sxx[c] += (resp.T @ xc_sq).double()
        self.comm.sum_(nk, sx, sxx, ll, sizes)
        nk = nk + _EPS
        if full:  # sums around μ_old: μ = μ_old + δ, Σ = Σr(h − μ_old)(h − μ_old)ᵀ/N − δδᵀ
            delta = sx / nk[..., None]
            means = around + delta
            cov = sxx / nk[..., None, None] - delta[..., :, None] * delta[..., None, :]
            cov = (cov + cov.transpose(-1, -2)) / 2 + self.reg_covar * torch.eye(D, dtype=torch.float64)
        else:
            means = sx / nk[..., None]
            cov = (sxx / nk[..., None] - means ** 2).clamp_min(0) + self.reg_covar
        self._weights, self._means, self._covariances = nk / nk.sum(1, keepdim=True), means, cov
        self._set_derived()
        return sizes, ll

    def _state(self) -> dict[str, torch.Tensor]:
        return {"weights": self._weights, "means": self._means, "covariances": self._covariances,
                "reference": self._reference}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._weights, self._means = state["weights"], state["means"]
        self._covariances, self._reference = state["covariances"], state["reference"]
        self._set_derived()
