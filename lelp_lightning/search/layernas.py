"""LayerNAS's search (Fan et al., arXiv 2304.11517): layer by layer, the best candidate of each cost bucket.

An architecture is one option index per layer; index 0 is the layer's default (its largest option). While
layer i is searched, every kept architecture is combined with each option of layer i (the later layers keep
their default, the earlier ones what was kept); the candidates are grouped into H buckets by cost and only the
best of each bucket by reward goes on to layer i + 1. The search evaluates at most H · |options| · L candidates
instead of the product of the options, on the assumption that what a later layer should be does not depend on
the earlier ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Arch = tuple[int, ...]
Scores = dict[Arch, tuple[float, float]]  # architecture → (cost, reward)


def bucket_edges(low: float, high: float, buckets: int) -> list[float]:
    """The H − 1 inner edges of H buckets between the cheapest (``low``) and the dearest (``high``) architecture,
    evenly spaced in log(cost) (costs span orders of magnitude; linearly when ``low`` is not positive)."""
    if high <= low or buckets <= 1:
        return []
    if low > 0:
        return [low * (high / low) ** (i / buckets) for i in range(1, buckets)]
    return [low + (high - low) * i / buckets for i in range(1, buckets)]


def bucket_of(cost: float, edges: Sequence[float]) -> int:
    return sum(cost >= e for e in edges)


def keep_best(scores: Scores, candidates: Sequence[Arch], edges: Sequence[float]) -> list[Arch]:
    """Per cost bucket, the candidate of largest reward (ties: the cheaper, then the first in order); a candidate
    that could not be scored (reward −∞) is never kept."""
    best: dict[int, Arch] = {}
    for arch in candidates:
        cost, reward = scores[arch]
        if reward == -math.inf:
            continue
        b = bucket_of(cost, edges)
        if b not in best:
            best[b] = arch
            continue
        other_cost, other_reward = scores[best[b]]
        if (reward, -cost) > (other_reward, -other_cost):
            best[b] = arch
    return [best[b] for b in sorted(best)]


def layer_candidates(kept: Sequence[Arch], layer: int, options: int) -> list[Arch]:
    """Every kept architecture with each option of ``layer`` (duplicates dropped, order kept)."""
    out: dict[Arch, None] = {}
    for arch in kept:
        for o in range(options):
            out[arch[:layer] + (o,) + arch[layer + 1:]] = None
    return list(out)


def layernas(num_options: Sequence[int], buckets: int, edges: Sequence[float],
             evaluate: Callable[[list[Arch]], Scores]) -> tuple[Scores, list[list[Arch]]]:
    """Run the search; ``evaluate(candidates)`` returns (cost, reward) of each (it may skip ones it has seen).
    Returns every score and, per layer, the architectures kept after it."""
    scores: Scores = {}
    kept: list[Arch] = [tuple(0 for _ in num_options)]
    history = []
    for layer, options in enumerate(num_options):
        candidates = layer_candidates(kept, layer, options)
        fresh = [a for a in candidates if a not in scores]
        if fresh:
            scores.update(evaluate(fresh))
        kept = keep_best(scores, candidates, edges)
        assert len(kept) <= buckets
        history.append(kept)
    return scores, history


def pareto_front(points: dict[Arch, tuple[float, float]]) -> list[Arch]:
    """The architectures no other one beats on both cost (lower) and reward (higher), by increasing cost."""
    ordered = sorted(points, key=lambda a: (points[a][0], -points[a][1]))
    front, best = [], -math.inf
    for arch in ordered:
        if points[arch][1] > best:
            front.append(arch)
            best = points[arch][1]
    return front
