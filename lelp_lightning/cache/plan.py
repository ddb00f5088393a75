"""Which cache entries a run needs, how the teacher fills them, and the checks that an entry is this run's.

One entry per split, keyed by the fingerprints of teacher, source, split and (semi-supervised) the labeled
rows. The teacher and source are read through their protocol only (``fingerprint``, ``split``, ``fit``,
``classifier``, ``encode_rows``, ``row_order``), so the cache does not depend on the packages that define them.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from lelp_lightning.cache.blocks import PassTarget, build_entry
from lelp_lightning.cache.teacher_cache import CachedSplit, TeacherCache, cache_key
from lelp_lightning.core import FINAL, SPLITS, hide_labels, rows_fingerprint
from lelp_lightning.errors import LelpError

log = logging.getLogger(__name__)
PROBE = "least_squares_probe"  # the meta of an entry whose classifier is a probe, not the teacher's own layer


def check_classifier(entry: CachedSplit, rows: int = 1024) -> None:
    """Refuse a cache whose classifier does not turn its embeddings into its logits (logits = W·embedding + b).

    Every strategy reads the embedding as the input of the teacher's final linear layer; a W, b from another
    teacher or an embedding from another layer would give targets that are silently wrong. Checks the first
    ``rows`` rows, with a tolerance for reduced-precision teachers. A teacher whose final layer is unknown (outputs
    read from a file) gives a least-squares probe as its classifier (meta ``classifier: least_squares_probe``):
    the best linear read-out of its logits, checked for its shapes only.
    """
    if entry.W.shape != (entry.logits.shape[1], entry.embedding.shape[1]) or entry.b.shape != (entry.logits.shape[1],):
        raise LelpError(f"the teacher classifier in {entry.path} has W {tuple(entry.W.shape)}, "
                        f"b {tuple(entry.b.shape)} "
                        f"but the cache holds {entry.embedding.shape[1]}-d embeddings and {entry.logits.shape[1]} "
                        "classes; expected W [C, D] and b [C].")
    if entry.manifest["meta"].get("classifier") == PROBE:
        return
    embedding = np.asarray(entry.embedding[:rows], dtype=np.float64)
    logits = np.asarray(entry.logits[:rows], dtype=np.float64)
    predicted = embedding @ entry.W.astype(np.float64).T + entry.b.astype(np.float64)
    scale = max(np.abs(logits).max(initial=0.0), np.abs(predicted).max(initial=0.0))
    error = np.abs(predicted - logits).max(initial=0.0)
    if error > 1e-2 * scale + 1e-5:
        raise LelpError(f"the teacher classifier in {entry.path} does not reproduce the cached logits from the cached "
                        f"embeddings (largest difference {error:.3g}, logits up to {scale:.3g}); expected logits = "
                        "W·embedding + b with the embedding being the input of the teacher's final linear layer.")


class CachePlan:
    """The teacher cache entries of one (teacher, source, labeled rows): their keys, their build, their checks.

    ``labeled_rows``: positions of the training rows whose labels the run may read (``None``: all); the
    others are stored as ``UNLABELED``, and the teacher's head trains on the labeled ones alone.
    """

    def __init__(self, cache: TeacherCache, teacher, source, labeled_rows: np.ndarray | None = None,
                 num_labeled: int | None = None):
        self.cache = cache
        self.teacher = teacher
        self.source = source
        self.labeled_rows = labeled_rows
        self.num_labeled = num_labeled
        self._fingerprints: dict[str, str] = {}

    def fingerprint(self, of: str) -> str:
        """The fingerprint of the ``teacher``, the ``source`` or one split, computed once per plan: a split's hashes
        every row (seconds at a million rows) and a teacher's may stat its weight files."""
        if of not in self._fingerprints:
            component = {"teacher": self.teacher, "source": self.source}.get(of) or self.source.split(of)
            self._fingerprints[of] = component.fingerprint()
        return self._fingerprints[of]

    def key(self, split: str) -> str:
        parts = [self.fingerprint("teacher"), self.fingerprint("source"), self.fingerprint(split)]
        if self.labeled_rows is not None:  # a teacher trained on fewer labels, and hidden labels in the cache
            parts.append("labeled-" + rows_fingerprint(self.labeled_rows))
        return cache_key(*parts)

    def missing(self) -> list[str]:
        return [s for s in SPLITS if not self.cache.exists(self.key(s))]

    def _meta(self, split: str) -> dict:
        return {"teacher": self.fingerprint("teacher"), "source": self.fingerprint("source"), "split": split,
                "split_fingerprint": self.fingerprint(split),
                "teacher_class": type(self.teacher).__name__, "num_labeled": self.num_labeled,
                **({} if getattr(self.teacher, "exact_classifier", True) else {"classifier": PROBE})}

    def feature_targets(self) -> list[PassTarget]:
        """The teacher's own label-free entries (a frozen encoder's features) that its ``fit`` reads."""
        return self.teacher.pass_targets(self.source, self.cache) if self.missing() else []

    def output_targets(self) -> list[PassTarget]:
        """The missing splits' entries (embedding + logits), after fitting the teacher on the labeled rows."""
        missing = self.missing()
        if not missing:
            return []
        self.teacher.fit(self.source, self.cache, labeled=self.labeled_rows)
        W, _ = self.teacher.classifier()
        targets = []
        for split in missing:
            data = self.source.split(split)
            targets.append(PassTarget(
                key=self.key(split), row_ids=data.row_ids, meta=self._meta(split),
                labels=hide_labels(data.labels, self.labeled_rows if split == "train" else None),
                embedding_dim=W.shape[1], num_classes=W.shape[0], order=self.teacher.row_order(data),
                block_size=self.teacher.batch_size, encode=functools.partial(self.teacher.encode_rows, data),
                classifier=self.teacher.classifier, modules=self.teacher.modules(), desc=f"teacher pass [{split}]"))
        return targets

    def lock(self):
        """The lock of this plan's whole build (a context manager): held by the process that runs the teacher (a
        one-process build, or the ``lelp cache`` process that starts the others) from before the teacher is fitted
        until every entry is sealed, so a second build of the same plan waits and then finds every entry cached.
        Each entry's own lock (:meth:`TeacherCache.lock`) still guards it against other plans sharing it."""
        return self.cache.lock("plan-" + cache_key(*map(self.key, SPLITS)), "this teacher cache")

    def build(self, progress: bool = True) -> None:
        """Run the teacher, in this process, into every entry not cached yet (features first, then outputs)."""
        if not self.missing():
            log.info("teacher cache hit for every split in %s; the teacher does not run", self.cache.root)
            return
        with self.lock():
            if not self.missing():  # another process built it while this one waited
                log.info("teacher cache hit for every split in %s; the teacher does not run", self.cache.root)
                return
            log.info("%s for split(s) %s into %s", getattr(self.teacher, "pass_description", "running the teacher"),
                     ", ".join(self.missing()), self.cache.root)
            for targets in (self.feature_targets, self.output_targets):
                for target in targets():
                    build_entry(self.cache, target, progress)

    def open(self) -> dict[str, CachedSplit]:
        """Every split's finished entry, refused when it was built for another teacher, source or split, or
        when its classifier does not reproduce its logits, or differs between splits."""
        entries = {}
        for split in SPLITS:
            entry = self.cache.open(self.key(split))
            expected = {"teacher": self.fingerprint("teacher"), "source": self.fingerprint("source"),
                        "split_fingerprint": self.fingerprint(split)}
            stale = [k for k in expected if entry.manifest["meta"].get(k) != expected[k]]
            if stale:
                raise LelpError(f"the teacher cache {entry.path} was built for another {', '.join(stale)} "
                                f"({', '.join(str(entry.manifest['meta'].get(k)) for k in stale)}, this run has "
                                f"{', '.join(str(expected[k]) for k in stale)}); delete it to rebuild.")
            if entry.logits.shape[1] != self.source.num_classes:
                raise LelpError(f"the teacher cache {entry.path} has {entry.logits.shape[1]} classes but the data "
                                f"source has {self.source.num_classes}; the teacher's classifier does not match "
                                "the data.")
            check_classifier(entry)
            entries[split] = entry
        train = entries["train"]
        for split in ("val", "test"):
            if not (np.array_equal(entries[split].W, train.W) and np.array_equal(entries[split].b, train.b)):
                raise LelpError(f"the {split} cache was written by a different teacher classifier than the train "
                                "cache; delete the cache folder to rebuild.")
        return entries

    # -- a representation other than the final layer's input (what a strategy may read instead) ------------
    def check_representation(self, name: str) -> None:
        available = self.teacher.representations()
        if name != FINAL and name not in available:
            names = ", ".join([FINAL, *available]) if available else FINAL
            raise LelpError(f"{type(self.teacher).__name__} has no representation {name!r}; expected one of: {names}.")

    def representation_key(self, name: str, split: str) -> str:
        self.check_representation(name)
        if name == FINAL:
            return self.key(split)
        return self.teacher.representation_key(name, self.source, split,
                                                cache_key(self.key(split), "representation", name))

    def build_representation(self, name: str, progress: bool = True) -> None:
        """Fill representation ``name`` of every split not cached yet (the teacher is fitted first: a trained
        teacher's layers depend on its training). ``final`` is the teacher's own entries (:meth:`build`)."""
        missing = [s for s in SPLITS if not self.cache.exists(self.representation_key(name, s))]
        if name == FINAL or not missing:
            return
        self.teacher.fit(self.source, self.cache, labeled=self.labeled_rows)
        for split in missing:
            key = self.representation_key(name, split)
            build_entry(self.cache, self.teacher.representation_target(name, self.source, split, key), progress)

    def open_representation(self, name: str, entries: dict[str, CachedSplit]) -> dict[str, CachedSplit]:
        """Representation ``name`` of every split, refused unless its rows are those of the teacher's ``entries``."""
        if name == FINAL:
            return entries
        opened = {}
        for split in SPLITS:
            entry = self.cache.open(self.representation_key(name, split))
            if not np.array_equal(entry.row_id, entries[split].row_id):
                raise LelpError(f"the {name!r} representation in {entry.path} holds other rows than the teacher "
                                f"cache {entries[split].path} of the {split} split; delete it to rebuild.")
            opened[split] = entry
        return opened
