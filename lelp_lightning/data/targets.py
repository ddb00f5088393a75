"""The subclass targets of a run: the strategy, fitted once on the training split, and the z it gives each split.

The strategy is fitted the first time targets are asked for, *after* a checkpoint had the chance to restore
it (a resumed run does not refit), and z is materialised once per strategy fingerprint. Under DDP each rank
fits on its shard and the statistics are all-reduced (:func:`~lelp_lightning.strategies.fit_strategy`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import numpy as np

from lelp_lightning.cache import CachedSplit
from lelp_lightning.core import SPLITS, UNLABELED
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import RowInfo, SubclassStrategy, fit_strategy

FIT_LABELS = ("label", "teacher")
log = logging.getLogger(__name__)


class SubclassTargets:
    """Owns ``strategy`` and its z [N,C,S] per split; rows are grouped by their ``label`` or the ``teacher``'s
    argmax when fitting (hidden labels always by the teacher's argmax)."""

    def __init__(self, strategy: SubclassStrategy, entries: dict[str, CachedSplit], rows: Callable[[str], RowInfo],
                 fit_labels: str = "label"):
        if fit_labels not in FIT_LABELS:
            raise LelpError(f"fit_labels must be one of {FIT_LABELS}, got {fit_labels!r}.")
        self.strategy = strategy
        self.entries = entries
        self.rows = rows
        self.fit_labels = fit_labels
        self._z: dict[str, np.ndarray] = {}
        self._z_fingerprint: str | None = None

    def fit(self) -> None:
        """Fit the strategy unless it is fitted (or restored), and materialise z for its current state."""
        train = self.entries["train"]
        if not self.strategy.fitted:
            teacher_argmax = np.asarray(train.logits).argmax(1)
            labels = np.asarray(train.label) if self.fit_labels == "label" else teacher_argmax
            labels = np.where(labels == UNLABELED, teacher_argmax, labels)
            fit_strategy(self.strategy, train.embedding, labels, (train.W, train.b), self.rows("train"))
            log.info("fitted the %s strategy on %d training rows (fingerprint %s)", type(self.strategy).__name__,
                     len(labels), self.strategy.fingerprint())
        if self._z_fingerprint != self.strategy.fingerprint():
            self._z = {s: self.strategy.transform(self.entries[s].embedding, self.rows(s)) for s in SPLITS}
            self._z_fingerprint = self.strategy.fingerprint()

    def z(self, split: str) -> np.ndarray:
        self.fit()
        return self._z[split]

    def report(self, split: str = "test") -> dict[str, float]:
        """What the fitted strategy measures about itself on ``split`` (e.g. Subclass Distillation's head accuracy)."""
        self.fit()
        entry = self.entries[split]
        return self.strategy.report(entry.embedding, entry.label)

    def teacher_cache_fingerprint(self) -> str:
        """Identifies the training split's teacher embeddings and classifier, which the strategy is fitted on."""
        train = self.entries["train"]
        h = hashlib.sha256(train.manifest["arrays"]["embedding"]["sha256"].encode())
        for array in (train.W, train.b):
            h.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def state_dict(self) -> dict:
        if not self.strategy.fitted:
            return {}
        return {"strategy": self.strategy.state_dict(), "teacher_cache": self.teacher_cache_fingerprint()}

    def load_state_dict(self, state: dict, training: bool) -> None:
        """Restore the fitted strategy (it is not refitted); one fitted on another teacher cache is refused for
        ``training``, where its targets would silently differ, and only warned about otherwise."""
        if "strategy" not in state:
            return
        saved, current = state.get("teacher_cache"), self.teacher_cache_fingerprint()
        if saved is not None and saved != current:
            message = (f"the checkpoint's strategy was fitted on other teacher outputs (teacher cache {saved}) than "
                       f"this run's {self.entries['train'].path} ({current}); resume with the same teacher and "
                       "cache (copy the cache folder along with the checkpoint) or start a new fit.")
            if training:
                raise LelpError(message)
            log.warning("%s The subclass targets are not used outside training, so this run goes on.", message)
        self.strategy.load_state_dict(state["strategy"])
        log.info("restored the %s strategy from the checkpoint (fingerprint %s); it is not refitted",
                 type(self.strategy).__name__, self.strategy.fingerprint())
