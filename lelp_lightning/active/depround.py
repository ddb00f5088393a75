"""Exactly b distinct rows with given marginals: capping a distribution at 1 and dependent rounding (DepRound).

DepRound (Gandhi, Khuller, Parthasarathy, Srinivasan, J. ACM 2006) turns marginals q ∈ [0, 1]^n with Σ q = b
into a random set of exactly b rows with P(row i is chosen) = q_i, by repeatedly moving mass between two
fractional entries so that one of them becomes 0 or 1, with probabilities that keep each expectation unchanged.
"""

from __future__ import annotations

import numpy as np

from lelp_lightning.errors import LelpError

_EPS = 1e-9


def cap_marginals(p: np.ndarray, b: int) -> np.ndarray:
    """Marginals q_i = min(1, c·p_i) summing to ``b`` (one c for every uncapped row): the rows whose share of
    b·p would exceed 1 are taken surely and the rest of the budget is spread over the others in proportion to p."""
    p = np.asarray(p, dtype=np.float64)
    support = int(np.count_nonzero(p > 0))
    if b > support:
        raise LelpError(f"cannot draw {b} distinct rows from a distribution over {support} rows; expected a "
                        "support at least as large as the batch.")
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    tail = np.cumsum(sorted_p[::-1])[::-1]  # tail[j] = Σ_{i ≥ j} sorted_p[i]
    q = np.zeros_like(p)
    for capped in range(b + 1):  # the `capped` largest rows get 1; the smallest such count that fits is the one
        scale = (b - capped) / tail[capped] if capped < len(p) and tail[capped] > 0 else 0.0
        if capped == b or scale * sorted_p[capped] <= 1 + _EPS:
            q[order[:capped]] = 1.0
            q[order[capped:]] = np.minimum(1.0, scale * sorted_p[capped:])
            return q
    raise AssertionError("unreachable: capping all b rows always fits")


def dep_round(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sorted positions of a random set of exactly round(Σq) rows with P(i in set) = q_i."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0).copy()
    total = q.sum()
    b = int(round(total))
    if abs(total - b) > 1e-6:
        raise LelpError(f"DepRound needs marginals that sum to an integer (the batch size), got {total:.6g}.")
    fractional = [int(i) for i in np.flatnonzero((q > _EPS) & (q < 1 - _EPS))]
    i = None
    for j in fractional:
        if i is None:
            i = j
            continue
        alpha, beta = min(1 - q[i], q[j]), min(q[i], 1 - q[j])
        if rng.random() < beta / (alpha + beta):
            q[i], q[j] = q[i] + alpha, q[j] - alpha
        else:
            q[i], q[j] = q[i] - beta, q[j] + beta
        # at least one of the two is now integral; carry on with the one that is still fractional
        if _EPS < q[i] < 1 - _EPS:
            continue
        i = j if _EPS < q[j] < 1 - _EPS else None
    chosen = np.flatnonzero(q > 0.5)
    if len(chosen) != b:  # float drift left one entry on the wrong side of 1/2: settle it by its size
        order = np.argsort(-q, kind="stable")
        chosen = np.sort(order[:b])
    return chosen.astype(np.int64)
