"""The Teacher protocol: what the cache build needs from a teacher, and nothing more; and the teacher registry.

A teacher registers a short name by subclassing, ``class MyTeacher(Teacher, name="mine", description="...")``
(the description defaults to the docstring's first line; a plugin's module goes in the entry-point group
``lelp_lightning.teachers``), so ``class_path: mine`` and ``--data.teacher mine`` work as they do for strategies,
objectives and students.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod

import numpy as np
from torch import nn

from lelp_lightning.cache import PassTarget, TeacherCache
from lelp_lightning.core import Source, SplitData
from lelp_lightning.errors import LelpError
from lelp_lightning.registry import Registry

teachers = Registry("teacher", "lelp_lightning.teachers")


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

    def __init_subclass__(cls, name: str | None = None, description: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            teachers.register(cls, name, description or (cls.__doc__ or "").strip().split("\n")[0])
            cls.registered_name = name

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

    # -- other representations a strategy may read instead of the final layer's input --------------------
    def representations(self) -> dict[str, str]:
        """The representations besides ``final`` (the final layer's input, which every teacher has) that this
        teacher exposes, name → what it is; each is cached once per split. Default: none."""
        return {}

    def representation_key(self, name: str, source: Source, split: str, key: str) -> str:
        """The cache key of representation ``name`` of ``split``; ``key`` is the one the cache plan proposes
        (tied to this teacher, the data and the labeled rows). A label-free representation shared with another
        entry (a frozen encoder's features) returns that entry's key instead."""
        return key

    def representation_target(self, name: str, source: Source, split: str, key: str) -> PassTarget:
        """How the pass fills representation ``name`` of ``split`` into the entry ``key`` (features only,
        zero classes), after :meth:`fit`."""
        raise LelpError(f"{type(self).__name__} exposes no representation {name!r}.")

    def _features_target(self, name: str, split: SplitData, key: str, dim: int, meta: dict,
                         encode) -> PassTarget:
        """A features-only :class:`PassTarget` over ``split`` in :meth:`row_order`, ``encode(index) -> [B, dim]``."""
        return PassTarget(key=key, labels=split.labels, row_ids=split.row_ids, embedding_dim=dim, num_classes=0,
                          meta={**meta, "representation": name}, order=self.row_order(split),
                          block_size=self.batch_size,
                          encode=lambda index: (encode(index), np.zeros((len(index), 0), np.float32)),
                          classifier=lambda: (np.zeros((0, dim), np.float32), np.zeros(0, np.float32)),
                          modules=self.modules(), desc=f"teacher {name} [{meta.get('split', '')}]")
