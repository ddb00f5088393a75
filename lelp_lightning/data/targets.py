"""The subclass targets of a run: the strategy, fitted once on the training split, and the z it gives each split.

The strategy is fitted the first time targets are asked for, *after* a checkpoint had the chance to restore
it (a resumed run does not refit), and z is materialised once per strategy fingerprint. Under DDP each rank
fits on its shard and the statistics are all-reduced (:func:`~lelp_lightning.strategies.fit_strategy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from lelp_lightning.cache import CachedSplit
from lelp_lightning.core import SPLITS, UNLABELED
from lelp_lightning.data.representation import StrategyInputs
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import RowInfo, SubclassStrategy, fit_strategy

FIT_LABELS = ("label", "teacher")
log = logging.getLogger(__name__)


class SubclassTargets:
    """Owns ``strategy`` and its z [N,C,S] per split; rows are grouped by their ``label`` or the ``teacher``'s
    argmax when fitting (hidden labels always by the teacher's argmax). The strategy reads ``inputs()``: the
    run's teacher representation and the classifier it sees (:mod:`~lelp_lightning.data.representation`)."""

    def __init__(self, strategy: SubclassStrategy, entries: dict[str, CachedSplit], rows: Callable[[str], RowInfo],
                 inputs: Callable[[], StrategyInputs], fit_labels: str = "label"):
        if fit_labels not in FIT_LABELS:
            raise LelpError(f"fit_labels must be one of {FIT_LABELS}, got {fit_labels!r}.")
        self.strategy = strategy
        self.entries = entries
        self.rows = rows
        self.inputs = inputs
        self.fit_labels = fit_labels
        self._z: dict[str, np.ndarray] = {}
        self._z_fingerprint: str | None = None

    def fit(self) -> None:
        """Fit the strategy unless it is fitted (or restored), and materialise z for its current state."""
        inputs = self.inputs()
        if not self.strategy.fitted:
            fit_strategy(self.strategy, inputs.embeddings["train"], self.fit_groups(), (inputs.W, inputs.b),
                         self.rows("train"))
            log.info("fitted the %s strategy on the %r representation of %d training rows (fingerprint %s)",
                     type(self.strategy).__name__, inputs.name, len(inputs.embeddings["train"]),
                     self.strategy.fingerprint())
        if self._z_fingerprint != self.strategy.fingerprint():
            self._z = {s: self.strategy.transform(inputs.embeddings[s], self.rows(s)) for s in SPLITS}
            self._z_fingerprint = self.strategy.fingerprint()

    def fit_groups(self) -> np.ndarray:
        """The class each training row is fitted under: its ``label`` or the ``teacher``'s argmax (hidden labels:
        always the teacher's argmax)."""
        train = self.entries["train"]
        teacher_argmax = np.asarray(train.logits).argmax(1)
        labels = np.asarray(train.label) if self.fit_labels == "label" else teacher_argmax
        return np.where(labels == UNLABELED, teacher_argmax, labels)

    def z(self, split: str) -> np.ndarray:
        self.fit()
        return self._z[split]

    def report(self, split: str = "test") -> dict[str, float]:
        """What the fitted strategy measures about itself on ``split`` (e.g. Subclass Distillation's head accuracy)."""
        self.fit()
        return self.strategy.report(self.inputs().embeddings[split], self.entries[split].label)

    def teacher_cache_fingerprint(self) -> str:
        """Identifies the training split's representation and the classifier the strategy is fitted on."""
        return self.inputs().fingerprint

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
