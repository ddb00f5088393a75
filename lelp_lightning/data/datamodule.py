"""DistillDataModule: the Lightning face of the teacher side, wiring small objects together.

``prepare_data`` runs the teacher once per split into the cache (:class:`~lelp_lightning.cache.CachePlan`);
``setup`` opens and checks the entries and featurises the student inputs; the strategy is fitted when a
dataloader is first asked for, after a checkpoint could restore it (:mod:`~lelp_lightning.data.targets`).
A batch is a dict: ``inputs``, ``label``, ``teacher_logits``, ``subclass_logits`` and the keys the model's
objectives declare (``DistillModule.batch_keys``). With ``num_labeled`` the other training rows are ``UNLABELED``.
With ``folds`` the run sees one cross-validation fold of the training split (:mod:`~lelp_lightning.data.folds`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import numpy as np
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lelp_lightning.cache import CachedSplit, CachePlan, TeacherCache
from lelp_lightning.core import FINAL, SPLITS, Source, TeacherStatistics, hide_labels
from lelp_lightning.data.dataset import CacheDataset, batch_loader
from lelp_lightning.data.featurizers import Featurizer, HashedNgramFeaturizer, RowsOf, StudentInputs
from lelp_lightning.data.folds import fold_rows, take
from lelp_lightning.data.labels import choose_labeled_rows
from lelp_lightning.data.representation import PROBES, StrategyInputs, strategy_inputs
from lelp_lightning.data.subclass_report import subclass_report
from lelp_lightning.data.targets import SubclassTargets
from lelp_lightning.data.teacher_accuracy import TeacherQuality, teacher_metrics
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import RowInfo, SubclassStrategy
from lelp_lightning.teachers import Teacher


class DistillDataModule(LightningDataModule):
    """Teacher side of distillation, from labeled rows to batches with targets.

    Args:
        source, teacher, strategy: the labeled rows and their split; the frozen teacher, run once per split into
            the cache (``cache_dir``, kept out of git); how pseudo-subclasses are made.
        featurizer: raw inputs → student inputs (default: hashed word uni+bigrams).
        batch_size: the global training batch: each of W processes takes batch_size / W rows of every batch, so
            the updates do not depend on W. ``eval_batch_size``: per process, for val / test / predict.
        fit_labels: group rows by their true ``label`` or the ``teacher``'s argmax when fitting the strategy.
        num_workers: DataLoader workers (a batch is one gather, so 0 is usually fastest); ``progress``: the
            teacher pass's progress bar.
        num_labeled: semi-supervised: how many training rows keep their labels (a stratified sample drawn with
            ``labeled_seed``); ``None`` (supervised, the paper's setting) keeps them all.
        representation: the teacher representation the strategy reads: ``final`` (the final linear layer's input)
            or one the teacher exposes (``encoder`` for an encoder + head teacher, ``hidden`` for a Hugging Face
            classifier, ``conv`` / ``conv_pooled`` for the CNN), cached once per split. ``probe``: the
            classifier a strategy sees for a representation other than ``final``: ``least_squares`` (the linear
            map from it to the teacher's logits) or ``none`` (W = 0: no null space to project out).
        folds, fold, fold_seed: cross-validation (``folds`` ≥ 2; 0: the splits as they are): the ``val`` split is
            fold ``fold`` of the labeled training rows (stratified, shuffled with ``fold_seed``) and ``train`` every
            other training row; the same teacher cache, nothing recomputed. ``lelp tune`` compares its finalists so.
    """

    def __init__(self, source: Source, teacher: Teacher, strategy: SubclassStrategy,
                 featurizer: Featurizer | None = None, cache_dir: str = ".lelp_cache", batch_size: int = 128,
                 eval_batch_size: int = 1024, fit_labels: str = "label", num_workers: int = 0, progress: bool = True,
                 num_labeled: int | None = None, labeled_seed: int = 0, representation: str = FINAL,
                 probe: str = "least_squares", folds: int = 0, fold: int = 0, fold_seed: int = 0):
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise LelpError(f"batch sizes must be >= 1, got batch_size={batch_size}, "
                            f"eval_batch_size={eval_batch_size}.")
        if num_labeled is not None and num_labeled < 1:
            raise LelpError(f"num_labeled must be >= 1 or null (every training row labeled), got {num_labeled}.")
        self.source, self.teacher, self.strategy = source, teacher, strategy
        self.featurizer = featurizer or HashedNgramFeaturizer()
        self.cache = TeacherCache(cache_dir)
        self.featurizer.use_cache(self.cache)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.progress = num_workers, progress
        self.num_labeled, self.labeled_seed = num_labeled, labeled_seed
        if probe not in PROBES:
            raise LelpError(f"probe must be one of {PROBES}, got {probe!r}.")
        self.representation, self.probe = representation, probe
        if folds == 1 or folds < 0 or (folds and not 0 <= fold < folds):
            raise LelpError(f"data.folds must be 0 (no cross-validation) or at least 2, and data.fold between 0 and "
                            f"folds - 1; got folds={folds}, fold={fold}.")
        self.folds, self.fold, self.fold_seed = folds, fold, fold_seed
        self._opened: dict[str, CachedSplit] = {}  # the cache entries as they are on disk (before a fold's view)
        self._cached: dict[str, CachedSplit] = {}  # filled by setup, shared with targets and quality
        self._inputs: dict[str, StudentInputs] = {}
        self.targets = SubclassTargets(strategy, self._cached, self.rows, lambda: self.strategy_inputs,
                                       fit_labels)  # validates fit_labels
        self.quality = TeacherQuality(self._cached)

    # -- sizes linked into the model -------------------------------------------------------------------
    num_classes = property(lambda self: self.source.num_classes)
    num_subclasses = property(lambda self: self.strategy.num_subclasses)
    num_outputs = property(lambda self: self.num_classes * self.num_subclasses)
    input_dim = property(lambda self: self.featurizer.input_dim)

    @functools.cached_property
    def labeled_rows(self) -> np.ndarray | None:
        """Positions of the training rows whose labels may be used; ``None`` when all of them may."""
        if self.num_labeled is None:
            return None
        return choose_labeled_rows(self.source.split("train").labels, self.num_labeled, self.labeled_seed)

    @functools.cached_property
    def fold_split(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(the training rows this fold trains on, the labeled rows it is scored on), positions in the training
        split; None without ``folds``."""
        if not self.folds:
            return None
        return fold_rows(self.source.split("train").labels, self.labeled_rows, self.folds, self.fold, self.fold_seed)

    def in_fold(self, by_split: dict) -> dict:
        """A split → rows mapping as this run sees it: with ``folds``, ``train`` and ``val`` are the fold's parts of
        the training split's rows (cache entries, student inputs, arrays or lists)."""
        if self.fold_split is None:
            return by_split
        rows = dict(zip(("train", "val"), self.fold_split, strict=True))
        return {**by_split, **{split: _rows_of(by_split["train"], index) for split, index in rows.items()}}

    @functools.cached_property
    def plan(self) -> CachePlan:  # the teacher cache entries of this run
        return CachePlan(self.cache, self.teacher, self.source, self.labeled_rows, self.num_labeled)

    def prepare_data(self) -> None:
        """The featuriser's cache (a smaller encoder's features), then the teacher over every uncached split."""
        self.plan.check_representation(self.representation)  # before anything runs, not after
        self.featurizer.prepare(self.source, self.cache)
        self.plan.build(self.progress)
        self.plan.build_representation(self.representation, self.progress)

    def setup(self, stage: str | None = None) -> None:
        if not self._cached:
            self._opened = self.plan.open()
            self._cached.update(self.in_fold(self._opened))
            self._inputs.update(self.in_fold({s: self.featurizer.featurize(self.source, s, self.cache)
                                              for s in SPLITS}))

    @functools.cached_property
    def strategy_inputs(self) -> StrategyInputs:
        """The representation the strategy reads and the classifier it sees (the probe is fitted once)."""
        self.setup()
        opened = self.in_fold(self.plan.open_representation(self.representation, self._opened))
        inputs = strategy_inputs(self.representation, self.probe, self._cached, opened)
        if self.fold_split is None:
            return inputs
        fold = f"{inputs.fingerprint}|fold {self.fold} of {self.folds}, seed {self.fold_seed}"
        return dataclasses.replace(inputs, fingerprint=hashlib.sha256(fold.encode()).hexdigest()[:16])

    def split_cache(self, split: str) -> CachedSplit:
        self.setup()
        return self._cached[split]

    def rows(self, split: str) -> RowInfo:
        """What a strategy may read beside the embeddings: row ids, and fine labels hidden like the class labels
        (a fine label is a label: the oracle knows the subclasses of the labeled rows only)."""
        fine = {s: self.source.split(s).fine_labels for s in SPLITS}
        if fine["train"] is not None:
            fine["train"] = hide_labels(fine["train"], self.labeled_rows)
        fine = self.in_fold(fine)[split]
        return RowInfo(row_ids=self.split_cache(split).row_id, fine_labels=fine)

    def subclass_report(self, split: str = "train", max_rows: int = 20000) -> dict:
        """What the pseudo-subclasses of ``split`` are (:mod:`~lelp_lightning.data.subclass_report`), on at most
        ``max_rows`` rows (an even stride through the split); training rows are grouped as the strategy was fitted."""
        labels = self.targets.fit_groups() if split == "train" else np.asarray(self.split_cache(split).label)
        keep = np.arange(0, len(labels), -(-len(labels) // max_rows))
        fine = self.rows(split).fine_labels
        texts = self.in_fold({s: self.source.split(s).texts for s in SPLITS})[split]
        texts = None if isinstance(texts, np.ndarray) else [texts[i] for i in keep]
        return subclass_report(self.targets.z(split)[keep], labels[keep], None if fine is None else fine[keep],
                               texts, self.source.class_names)

    def teacher_statistics(self) -> TeacherStatistics:
        """What objectives may know of the teacher before training (handed to ``Objective.setup``)."""
        return TeacherStatistics(self.split_cache("train").embedding)

    def teacher_metrics(self, split: str = "test") -> dict[str, float]:
        """The teacher's accuracy and macro-F1 on ``split`` (from the cache), and the majority-class rate."""
        return teacher_metrics(self.split_cache(split), self.split_cache("train").label, self.num_classes)

    # -- batches ---------------------------------------------------------------------------------------
    def dataset(self, split: str, keys: set[str] = frozenset()) -> CacheDataset:
        """``split``'s rows with the default arrays and those of ``keys`` that the teacher side provides."""
        entry = self.split_cache(split)
        arrays = {"label": entry.label, "teacher_logits": entry.logits, "subclass_logits": self.targets.z(split)}
        optional = {"teacher_embedding": lambda: entry.embedding, "row_id": lambda: entry.row_id,
                    "teacher_accuracy": lambda: self.quality.accuracy(split),
                    "weight": lambda: self.quality.weights(split)}
        arrays.update({key: make() for key, make in optional.items() if key in keys})
        return CacheDataset(self._inputs[split], arrays)

    def loader(self, split: str, shuffle: bool, keys: set[str] = frozenset()) -> DataLoader:
        """``split``'s batches with ``keys`` and those the trainer's model declares, sharded over its processes."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        dataset = self.dataset(split, set(keys) | set(getattr(model, "batch_keys", ())))
        kwargs = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        return batch_loader(dataset, split, self.batch_size if shuffle else self.eval_batch_size,
                            kwargs.get("num_replicas", 1), kwargs.get("rank", 0), shuffle,
                            int(os.environ.get("PL_GLOBAL_SEED", 0)), self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test", shuffle=False, keys={"row_id"})

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """A batch is already on the CPU (the cache's memory maps); walking its nested dict to move it there
        costs a sizeable share of a sparse step. Other devices get Lightning's transfer."""
        return batch if device.type == "cpu" else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def state_dict(self) -> dict:  # checkpoints carry the fitted strategy
        return self.targets.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.setup()
        self.targets.load_state_dict(state, training=self.trainer is not None and self.trainer.state.fn == "fit")


def _rows_of(values, index: np.ndarray):
    """``values``' rows at ``index``: a cache entry, student inputs, an array or a list (None stays None)."""
    if values is None:
        return None
    if isinstance(values, CachedSplit):
        return take(values, index)
    if isinstance(values, StudentInputs):
        return RowsOf(values, index)
    if isinstance(values, np.ndarray):
        return values[index]
    return [values[i] for i in index]
