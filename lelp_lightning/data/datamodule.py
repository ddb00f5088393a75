"""DistillDataModule: owns the teacher side (source, teacher, cache, strategy, targets) and serves batches.

Flow: ``prepare_data`` runs the teacher once per split into the :class:`TeacherCache` (skipped when the
cache for this teacher + data + split + preprocessing exists); ``setup`` memory-maps the cache and
featurises the student inputs; the strategy is fitted on the training split the first time a dataloader is
asked for, *after* a checkpoint had the chance to restore its state, and z is materialised once per
strategy fingerprint. A batch is a plain dict: ``inputs``, ``label``, ``teacher_logits``, ``subclass_logits``
and, where an objective asks, ``teacher_embedding`` / ``row_id`` / ``teacher_accuracy`` (α(x), the teacher's
estimated accuracy at x) / ``weight`` (α(x) normalised to mean 1 over the training split).

Semi-supervised setting (``num_labeled``): only that many training rows keep their labels (the teacher's
head trains on them alone); the rest is the transfer set, labeled ``UNLABELED`` (−1) in the cache and in
every batch. The validation split stays labeled (it is where α(x) is estimated).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lelp_lightning.cache import CachedSplit, PassTarget, TeacherCache, cache_key
from lelp_lightning.data.featurizers import Featurizer, HashedNgramFeaturizer, StudentInputs
from lelp_lightning.data.labels import UNLABELED, choose_labeled_rows, hide_labels, rows_fingerprint
from lelp_lightning.data.samplers import EvalShardSampler, GlobalBatchSampler
from lelp_lightning.data.sources import SPLITS, TextSource
from lelp_lightning.data.teacher_accuracy import TeacherAccuracy
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import RowInfo, SubclassStrategy
from lelp_lightning.strategies.distributed import fit_strategy
from lelp_lightning.teachers.base import Teacher

FIT_LABELS = ("label", "teacher")
log = logging.getLogger(__name__)


class CacheDataset(Dataset):
    """Rows of one split; ``__getitems__`` answers a whole batch of indices with one gather per array."""

    def __init__(self, inputs: StudentInputs, arrays: dict[str, np.ndarray]):
        self.inputs = inputs
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: list[int]) -> dict:
        index = np.asarray(indices, dtype=np.int64)
        batch = {"inputs": self.inputs.gather(index)}
        for name, array in self.arrays.items():
            batch[name] = torch.from_numpy(np.ascontiguousarray(array[index]))
        return batch

    def __getitem__(self, index) -> dict:
        """A batch of one row (an int), or of the rows of an index array (what the samplers yield)."""
        return self.__getitems__(np.atleast_1d(index))


def _batch_as_is(batch):
    return batch


def check_classifier(entry: CachedSplit, rows: int = 1024) -> None:
    """Refuse a cache whose classifier does not turn its embeddings into its logits (logits = W·embedding + b).

    Every strategy reads the embedding as the input of the teacher's final linear layer; a W, b from another
    teacher or an embedding from another layer would give targets that are silently wrong. Checks the first
    ``rows`` rows, with a tolerance for reduced-precision teachers.
    """
    if entry.W.shape != (entry.logits.shape[1], entry.embedding.shape[1]) or entry.b.shape != (entry.logits.shape[1],):
        raise LelpError(f"the teacher classifier in {entry.path} has W {tuple(entry.W.shape)}, b {tuple(entry.b.shape)} "
                        f"but the cache holds {entry.embedding.shape[1]}-d embeddings and {entry.logits.shape[1]} "
                        "classes; expected W [C, D] and b [C].")
    embedding = np.asarray(entry.embedding[:rows], dtype=np.float64)
    logits = np.asarray(entry.logits[:rows], dtype=np.float64)
    predicted = embedding @ entry.W.astype(np.float64).T + entry.b.astype(np.float64)
    scale = max(np.abs(logits).max(initial=0.0), np.abs(predicted).max(initial=0.0))
    error = np.abs(predicted - logits).max(initial=0.0)
    if error > 1e-2 * scale + 1e-5:
        raise LelpError(f"the teacher classifier in {entry.path} does not reproduce the cached logits from the cached "
                        f"embeddings (largest difference {error:.3g}, logits up to {scale:.3g}); expected logits = "
                        "W·embedding + b with the embedding being the input of the teacher's final linear layer.")


class DistillDataModule(LightningDataModule):
    """Teacher side of distillation, from labeled rows to batches with targets.

    Args:
        source: where the labeled rows come from and how they are split.
        teacher: the frozen teacher; run once per split into the cache.
        strategy: how pseudo-subclasses are made (LELP by default in the configs).
        featurizer: raw text → student inputs (default: hashed word uni+bigrams).
        cache_dir: folder of teacher caches (keep it out of git).
        batch_size: global training batch size: under DDP / FSDP each of W processes takes batch_size / W rows
            of every batch, so the updates do not depend on W. ``eval_batch_size``: per process, val/test/predict.
        fit_labels: rows are grouped by their true ``label`` or by the ``teacher``'s argmax when fitting the strategy.
        num_workers: DataLoader workers (batches are one gather each, so 0 is usually fastest).
        progress: show the teacher pass's progress bar.
        num_labeled: semi-supervised setting: how many training rows keep their labels (a stratified sample
            drawn with ``labeled_seed``); ``None`` (the paper's supervised setting) keeps them all.
    """

    def __init__(self, source: TextSource, teacher: Teacher, strategy: SubclassStrategy,
                 featurizer: Featurizer | None = None, cache_dir: str = ".lelp_cache", batch_size: int = 128,
                 eval_batch_size: int = 1024, fit_labels: str = "label", num_workers: int = 0, progress: bool = True,
                 num_labeled: int | None = None, labeled_seed: int = 0):
        super().__init__()
        if fit_labels not in FIT_LABELS:
            raise LelpError(f"fit_labels must be one of {FIT_LABELS}, got {fit_labels!r}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise LelpError(f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}.")
        if num_labeled is not None and num_labeled < 1:
            raise LelpError(f"num_labeled must be >= 1 or null (every training row labeled), got {num_labeled}.")
        self.source = source
        self.teacher = teacher
        self.strategy = strategy
        self.featurizer = featurizer or HashedNgramFeaturizer()
        self.cache = TeacherCache(cache_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.fit_labels = fit_labels
        self.num_workers = num_workers
        self.progress = progress
        self.num_labeled = num_labeled
        self.labeled_seed = labeled_seed
        self.extra_keys: set[str] = set()
        self._labeled_rows: np.ndarray | None = None
        self._teacher_accuracy: TeacherAccuracy | None = None
        self._alpha: dict[str, np.ndarray] = {}
        self._cached: dict[str, CachedSplit] = {}
        self._inputs: dict[str, StudentInputs] = {}
        self._z: dict[str, np.ndarray] = {}
        self._z_fingerprint: str | None = None

    # -- sizes linked into the model -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def num_subclasses(self) -> int:
        return self.strategy.num_subclasses

    @property
    def num_outputs(self) -> int:
        return self.num_classes * self.num_subclasses

    @property
    def input_dim(self) -> int:
        return self.featurizer.input_dim

    @property
    def teacher_embedding_dim(self) -> int:
        """D, the size of the teacher's embedding (read from the cache)."""
        return self.split_cache("train").embedding.shape[1]

    @property
    def labeled_rows(self) -> np.ndarray | None:
        """Positions of the training rows whose labels may be used; ``None`` when all of them may."""
        if self.num_labeled is not None and self._labeled_rows is None:
            self._labeled_rows = choose_labeled_rows(self.source.split("train").labels, self.num_labeled,
                                                     self.labeled_seed)
        return self._labeled_rows

    # -- teacher side ----------------------------------------------------------------------------------
    def cache_key(self, split: str) -> str:
        parts = [self.teacher.fingerprint(), self.source.fingerprint(), self.source.split(split).fingerprint()]
        if self.labeled_rows is not None:  # a teacher trained on fewer labels, and hidden labels in the cache
            parts.append("labeled-" + rows_fingerprint(self.labeled_rows))
        return cache_key(*parts)

    def missing_splits(self) -> list[str]:
        return [s for s in SPLITS if not self.cache.exists(self.cache_key(s))]

    def _entry(self, split: str) -> dict:
        """What the cache entry of ``split`` holds besides the teacher's outputs: key, labels, row ids, meta."""
        data = self.source.split(split)
        return {"key": self.cache_key(split), "row_ids": data.row_ids,
                "labels": hide_labels(data.labels, self.labeled_rows if split == "train" else None),
                "meta": {"teacher": self.teacher.fingerprint(), "source": self.source.fingerprint(),
                         "split": split, "split_fingerprint": data.fingerprint(),
                         "teacher_class": type(self.teacher).__name__, "num_labeled": self.num_labeled}}

    def prepare_data(self) -> None:
        """Run the teacher over every split not cached yet (once per teacher + data + split), and build what
        the featuriser caches (a smaller encoder's features)."""
        self.featurizer.prepare(self.source, self.cache)
        missing = self.missing_splits()
        if not missing:
            log.info("teacher cache hit for every split in %s; the teacher does not run", self.cache.root)
            return
        log.info("running the teacher for split(s) %s into %s", ", ".join(missing), self.cache.root)
        self.teacher.fit(self.source, self.cache, labeled=self.labeled_rows)
        for split in missing:
            data = self.source.split(split)
            W, _ = self.teacher.classifier()
            entry = self._entry(split)
            self.cache.build(
                entry["key"], labels=entry["labels"], row_ids=entry["row_ids"], embedding_dim=W.shape[1],
                num_classes=W.shape[0], batches=lambda done, data=data: self.teacher.encode_split(data, done),
                classifier=self.teacher.classifier, desc=f"teacher pass [{split}]", progress=self.progress,
                meta=entry["meta"],
            )

    def teacher_feature_targets(self) -> list[PassTarget]:
        """The teacher's own label-free entries (a frozen encoder's features) that its ``fit`` reads; for `lelp cache`."""
        return self.teacher.pass_targets(self.source, self.cache) if self.missing_splits() else []

    def teacher_pass_targets(self) -> list[PassTarget]:
        """The missing splits' entries as :class:`PassTarget` s for `lelp cache` (fits the teacher first)."""
        missing = self.missing_splits()
        if not missing:
            return []
        self.teacher.fit(self.source, self.cache, labeled=self.labeled_rows)
        W, _ = self.teacher.classifier()
        targets = []
        for split in missing:
            data = self.source.split(split)
            targets.append(PassTarget(
                **self._entry(split), embedding_dim=W.shape[1], num_classes=W.shape[0],
                order=self.teacher.row_order(data), block_size=self.teacher.batch_size,
                encode=functools.partial(self.teacher.encode_rows, data), classifier=self.teacher.classifier,
                modules=self.teacher.modules(), desc=f"teacher pass [{split}]"))
        return targets

    def setup(self, stage: str | None = None) -> None:
        if self._cached:
            return
        for split in SPLITS:
            entry = self.cache.open(self.cache_key(split))
            expected = {"teacher": self.teacher.fingerprint(), "source": self.source.fingerprint(),
                        "split_fingerprint": self.source.split(split).fingerprint()}
            stale = [k for k in expected if entry.manifest["meta"].get(k) != expected[k]]
            if stale:
                raise LelpError(f"the teacher cache {entry.path} was built for another {', '.join(stale)} "
                                f"({', '.join(str(entry.manifest['meta'].get(k)) for k in stale)}, this run has "
                                f"{', '.join(str(expected[k]) for k in stale)}); delete it to rebuild.")
            if entry.logits.shape[1] != self.num_classes:
                raise LelpError(f"the teacher cache {entry.path} has {entry.logits.shape[1]} classes but the data "
                                f"source has {self.num_classes}; the teacher's classifier does not match the data.")
            check_classifier(entry)
            self._cached[split] = entry
            self._inputs[split] = self.featurizer.featurize(self.source, split, self.cache)
        train = self._cached["train"]
        for split in ("val", "test"):
            if not (np.array_equal(self._cached[split].W, train.W) and np.array_equal(self._cached[split].b, train.b)):
                raise LelpError(f"the {split} cache was written by a different teacher classifier than the train "
                                "cache; delete the cache folder to rebuild.")

    def split_cache(self, split: str) -> CachedSplit:
        if split not in self._cached:
            self.setup()
        return self._cached[split]

    def rows(self, split: str) -> RowInfo:
        """What a strategy may read beside the embeddings: the cache's row ids, the source's fine labels.

        A fine label is a label: in the semi-supervised setting the transfer set's are hidden (``UNLABELED``)
        with its class labels, so the oracle knows the subclasses of the labeled rows only.
        """
        fine = self.source.split(split).fine_labels
        if split == "train" and fine is not None:
            fine = hide_labels(fine, self.labeled_rows)
        return RowInfo(row_ids=self.split_cache(split).row_id, fine_labels=fine)

    def _ensure_targets(self) -> None:
        train = self.split_cache("train")
        if not self.strategy.fitted:  # under DDP: fitted on each rank's shard, statistics all-reduced
            labels = np.asarray(train.label) if self.fit_labels == "label" else np.asarray(train.logits).argmax(1)
            if (labels == UNLABELED).any():  # hidden labels: group those rows by the teacher's argmax
                labels = np.where(labels == UNLABELED, np.asarray(train.logits).argmax(1), labels)
            fit_strategy(self.strategy, train.embedding, labels, (train.W, train.b), self.rows("train"))
            log.info("fitted the %s strategy on %d training rows (fingerprint %s)", type(self.strategy).__name__,
                     len(labels), self.strategy.fingerprint())
        if self._z_fingerprint != self.strategy.fingerprint():
            self._z = {s: self.strategy.transform(self.split_cache(s).embedding, self.rows(s)) for s in SPLITS}
            self._z_fingerprint = self.strategy.fingerprint()

    def strategy_report(self, split: str = "test") -> dict[str, float]:
        """What the fitted strategy measures about itself on ``split`` (e.g. Subclass Distillation's head accuracy)."""
        self._ensure_targets()
        entry = self.split_cache(split)
        return self.strategy.report(entry.embedding, entry.label)

    def subclass_logits(self, split: str) -> np.ndarray:
        self._ensure_targets()
        return self._z[split]

    def teacher_accuracy(self, split: str) -> np.ndarray:
        """α(x) per row of ``split``: the teacher's accuracy at x's margin, by isotonic regression on validation."""
        if self._teacher_accuracy is None:
            val = self.split_cache("val")
            self._teacher_accuracy = TeacherAccuracy(val.logits, val.label)
        if split not in self._alpha:
            self._alpha[split] = self._teacher_accuracy(self.split_cache(split).logits)
        return self._alpha[split]

    def example_weights(self, split: str) -> np.ndarray:
        """Weighted distillation's w(x): α(x) divided by its mean over the training split (so mean 1 there)."""
        mean = float(self.teacher_accuracy("train").mean())
        if mean <= 0:
            raise LelpError("the teacher is never right on the validation split, so every example weight is 0; "
                            "check the teacher and the labels.")
        return self.teacher_accuracy(split) / np.float32(mean)

    # -- batches ---------------------------------------------------------------------------------------
    def dataset(self, split: str) -> CacheDataset:
        entry = self.split_cache(split)
        arrays = {"label": entry.label, "teacher_logits": entry.logits, "subclass_logits": self.subclass_logits(split)}
        if "teacher_embedding" in self.extra_keys:
            arrays["teacher_embedding"] = entry.embedding
        if "row_id" in self.extra_keys:
            arrays["row_id"] = entry.row_id
        if "teacher_accuracy" in self.extra_keys:
            arrays["teacher_accuracy"] = self.teacher_accuracy(split)
        if "weight" in self.extra_keys:
            arrays["weight"] = self.example_weights(split)
        return CacheDataset(self._inputs[split], arrays)

    def _data_parallel(self) -> tuple[int, int]:
        """(number of data-parallel processes, this process's rank among them); (1, 0) without a trainer."""
        kwargs = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        return kwargs.get("num_replicas", 1), kwargs.get("rank", 0)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """Batches whose rows do not depend on the number of processes (see :mod:`lelp_lightning.data.samplers`)."""
        dataset = self.dataset(split)
        world, rank = self._data_parallel()
        if shuffle:
            sampler = GlobalBatchSampler(len(dataset), self.batch_size, world, rank,
                                         seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
        else:
            sampler = EvalShardSampler(len(dataset), self.eval_batch_size, world, rank, split)
        # the sampler yields index batches: one __getitems__ (one gather per array) per batch
        return DataLoader(dataset, batch_size=None, sampler=sampler, collate_fn=_batch_as_is,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        self.extra_keys.add("row_id")
        return self._loader("test", shuffle=False)

    # -- reference numbers -----------------------------------------------------------------------------
    def teacher_metrics(self, split: str = "test") -> dict[str, float]:
        """The teacher's accuracy and macro-F1 on ``split`` (from the cache), and the majority-class rate."""
        from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

        entry = self.split_cache(split)
        logits = torch.from_numpy(np.asarray(entry.logits))
        target = torch.from_numpy(np.asarray(entry.label))
        train_labels = np.asarray(self.split_cache("train").label)
        majority = int(np.bincount(train_labels[train_labels != UNLABELED], minlength=self.num_classes).argmax())
        C = self.num_classes
        return {
            "teacher_accuracy": multiclass_accuracy(logits, target, C, average="micro").item(),
            "teacher_macro_f1": multiclass_f1_score(logits, target, C, average="macro").item(),
            "majority_class_rate": float((target == majority).float().mean()),
        }

    # -- checkpoints carry the fitted strategy ----------------------------------------------------------
    def teacher_cache_fingerprint(self) -> str:
        """Identifies the training split's teacher embeddings and classifier, which the strategy is fitted on."""
        train = self.split_cache("train")
        h = hashlib.sha256(train.manifest["arrays"]["embedding"]["sha256"].encode())
        for array in (train.W, train.b):
            h.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def state_dict(self) -> dict:
        if not self.strategy.fitted:
            return {}
        return {"strategy": self.strategy.state_dict(), "teacher_cache": self.teacher_cache_fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the fitted strategy (it is not refitted on resume); a strategy fitted on another teacher
        cache is refused for training, where its targets would silently differ."""
        if "strategy" not in state:
            return
        saved, current = state.get("teacher_cache"), self.teacher_cache_fingerprint()
        if saved is not None and saved != current:
            message = (f"the checkpoint's strategy was fitted on other teacher outputs (teacher cache {saved}) than "
                       f"this run's {self.split_cache('train').path} ({current}); resume with the same teacher and "
                       "cache (copy the cache folder along with the checkpoint) or start a new fit.")
            if self.trainer is not None and self.trainer.state.fn == "fit":
                raise LelpError(message)
            log.warning("%s The subclass targets are not used outside training, so this run goes on.", message)
        self.strategy.load_state_dict(state["strategy"])
        log.info("restored the %s strategy from the checkpoint (fingerprint %s); it is not refitted",
                 type(self.strategy).__name__, self.strategy.fingerprint())
