"""Robust active distillation's choice of rows (Baykal et al., ICLR 2023, arXiv 2210.01213, Sec. 3–4).

The learner wants rows with a large gain g_i (how much the student would learn from the teacher's label of
row i); an adversary may corrupt up to m of the queried labels, wiping out their gain. For a sampling
distribution p over the pool the learner's guaranteed gain is Σ_i p_i g_i minus the m largest terms p_i g_i.
Its maximiser spreads mass over the k rows of largest gain with p_i ∝ 1/g_i, so that every p_i g_i is equal
and the adversary gains nothing by choosing one row over another; k maximises (k − m) / Σ_{i ≤ k} 1/g_i.
The tests check this closed form against the linear program (``scipy.optimize.linprog``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GAINS = ("margin", "entropy")
MIN_GAIN = 1e-6  # a row the student is sure of still has a (tiny) gain, so that 1/g is finite


def gains(probabilities: np.ndarray, kind: str = "margin") -> np.ndarray:
    """The informativeness of each row from the student's class probabilities [N, C]: ``margin``
    (1 − (p_top1 − p_top2)) or ``entropy`` (normalised by log C); both in [MIN_GAIN, 1]."""
    p = np.asarray(probabilities, dtype=np.float64)
    if kind == "margin":
        top = np.sort(p, axis=1)[:, -2:]
        g = 1.0 - (top[:, 1] - top[:, 0])
    elif kind == "entropy":
        g = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(1) / np.log(p.shape[1])
    else:
        raise ValueError(f"gain must be one of {GAINS}, got {kind!r}")
    return np.clip(g, MIN_GAIN, 1.0)


@dataclass
class Minimax:
    """The learner's distribution ``p`` over the rows, its support size ``k`` and its guaranteed gain ``value``."""

    p: np.ndarray
    k: int
    value: float


def guaranteed_gain(p: np.ndarray, g: np.ndarray, mistakes: int) -> float:
    """Σ p_i g_i less the ``mistakes`` largest terms: the gain that survives the adversary's best corruption."""
    terms = np.sort(np.asarray(p, np.float64) * np.asarray(g, np.float64))
    return float(terms[: len(terms) - mistakes].sum()) if mistakes < len(terms) else 0.0


def minimax_distribution(g: np.ndarray, mistakes: int, min_support: int = 1) -> Minimax:
    """The closed-form minimax distribution for gains ``g`` and an adversary with ``mistakes`` corruptions.

    ``min_support``: the smallest k allowed (a batch of b distinct rows needs k ≥ b). Ties in gain are broken
    by position. When the adversary can corrupt every candidate (k ≤ m for every allowed k) no distribution
    guarantees anything and the top ``min_support`` rows by gain get equal mass.
    """
    g = np.asarray(g, dtype=np.float64)
    n = len(g)
    if n == 0 or np.any(g <= 0):
        raise ValueError("gains must be positive and non-empty")
    order = np.argsort(-g, kind="stable")
    inverse = np.cumsum(1.0 / g[order])
    k_values = np.arange(max(min_support, mistakes + 1), n + 1)
    p = np.zeros(n)
    if len(k_values) == 0:
        k = min(max(min_support, 1), n)
        p[order[:k]] = 1.0 / k
        return Minimax(p, k, 0.0)
    values = (k_values - mistakes) / inverse[k_values - 1]
    best = int(np.argmax(values))
    k = int(k_values[best])
    p[order[:k]] = (1.0 / g[order[:k]]) / inverse[k - 1]
    return Minimax(p, k, float(values[best]))
