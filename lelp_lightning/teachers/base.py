"""The Teacher protocol: what the cache build needs from a teacher, and nothing more."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod

import numpy as np
from torch import nn

from lelp_lightning.cache import PassTarget, TeacherCache
from lelp_lightning.core import Source, SplitData


def fingerprint_of(kind: str, options: dict) -> str:
    payload = json.dumps({"kind": kind, **options}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Teacher(ABC):
    """A frozen classifier whose last layer is linear: logits = W · embedding + b.

    ``embedding`` is the input of that final layer (what LELP reads). A teacher may need preparation on
    the labeled training split (e.g. training its head); :meth:`fit` does it, and a teacher whose outputs
    are all cached already is never fitted nor run again.
    """

    batch_size: int = 64

    def fit(self, source: Source, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
        """Prepare the teacher on ``source``'s training split (default: nothing to prepare).

        ``labeled``: positions of the training rows whose labels it may read (semi-supervised setting);
        ``None``: all of them.
        """

    @abstractmethod
    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(embedding [B,D] float32, logits [B,C] float32) for raw texts."""

    @abstractmethod
    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        """The final linear layer (W [C,D], b [C])."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the teacher's outputs could change (weights, options, preprocessing)."""

    # -- the teacher pass: blocks of rows in a fixed order, by one process or many (`lelp cache`) ---------
    def row_order(self, split: SplitData) -> np.ndarray:
        """The fixed order in which the teacher pass cuts ``split`` into blocks (default: as stored)."""
        return np.arange(len(split))

    def encode_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, logits) of the rows ``index`` of ``split``."""
        return self.encode([split.texts[i] for i in index])

    def modules(self) -> list[nn.Module]:
        """The torch modules :meth:`encode` runs, for the pass to put on its device (inputs follow them)."""
        return []

    def pass_targets(self, source: Source, cache: TeacherCache) -> list[PassTarget]:
        """Label-free cache entries that :meth:`fit` reads (e.g. a frozen encoder's features) and a
        multi-process pass can fill first; default: none."""
        return []
