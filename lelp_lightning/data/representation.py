"""What a strategy reads: the teacher representation a run chooses, and the linear map it sees as the classifier.

``final`` (the default) is the input of the teacher's final linear layer with that layer as the classifier,
as LELP's null-space projection assumes. Any other representation R (a frozen encoder's output, a hidden
layer, conv features) has no classifier of its own, so the strategy is given a linear map instead (``probe``):

- ``least_squares`` (default): W, b minimising Σ‖W·r + b − f(x)‖² over the training rows, f the teacher's logits
  (the best linear read-out of the teacher from R; its null space is what the teacher's decision ignores);
- ``none``: W = 0, b = 0, whose null space is all of R: the null-space projection keeps everything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from lelp_lightning.cache import CachedSplit
from lelp_lightning.core import FINAL, SPLITS, least_squares_probe
from lelp_lightning.errors import LelpError

PROBES = ("least_squares", "none")


@dataclass(frozen=True)
class StrategyInputs:
    """The representation ``name`` of every split, the classifier the strategy sees, and their fingerprint."""

    name: str
    embeddings: dict[str, np.ndarray]
    W: np.ndarray
    b: np.ndarray
    fingerprint: str


def strategy_inputs(name: str, probe: str, entries: dict[str, CachedSplit],
                    representation: dict[str, CachedSplit]) -> StrategyInputs:
    """What the strategy reads for representation ``name``: ``representation``'s arrays (the teacher's own
    ``entries`` for ``final``) and the teacher's classifier or the ``probe``'s map to the teacher's logits."""
    if probe not in PROBES:
        raise LelpError(f"probe must be one of {PROBES}, got {probe!r}.")
    train = entries["train"]
    digest = hashlib.sha256(representation["train"].manifest["arrays"]["embedding"]["sha256"].encode())
    if name == FINAL:
        W, b = train.W, train.b
    else:
        digest.update(f"|{name}|{probe}".encode())
        x = representation["train"].embedding
        if probe == "least_squares":
            W, b = least_squares_probe(x, train.logits)
        else:
            classes = train.logits.shape[1]
            W, b = np.zeros((classes, x.shape[1]), np.float32), np.zeros(classes, np.float32)
    for array in (W, b):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return StrategyInputs(name, {s: representation[s].embedding for s in SPLITS}, np.asarray(W), np.asarray(b),
                          digest.hexdigest()[:16])
