"""The teacher side of an active run: which training rows a round distils on, and the teacher outputs it holds.

A round trains an ordinary :class:`~lelp_lightning.data.DistillDataModule` on a :class:`RoundSource` (the labeled
rows plus the rows queried so far) and a :class:`QueriedTeacher` that answers from the :class:`QueryStore`
only: the real teacher runs on the labeled, validation and test rows once, and on a pool row only when a
selector queries it. Every strategy, objective and student works unchanged on top.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from lelp_lightning.cache import CachedSplit, CachePlan, PassTarget, TeacherCache, build_entry, cache_key
from lelp_lightning.core import SPLITS, Source, SplitData, fingerprint_of, hide_labels, rows_fingerprint
from lelp_lightning.data.featurizers import Featurizer, RowsOf, StudentInputs
from lelp_lightning.errors import LelpError
from lelp_lightning.fileio import atomic_write_json, locked
from lelp_lightning.teachers import Teacher

log = logging.getLogger(__name__)


def subset(split: SplitData, rows: np.ndarray, labeled: np.ndarray | None = None) -> SplitData:
    """The rows ``rows`` (positions) of ``split``; labels and fine labels hidden except at positions ``labeled``."""
    rows = np.asarray(rows, dtype=np.int64)
    texts = split.texts[rows] if isinstance(split.texts, np.ndarray) else [split.texts[i] for i in rows]
    visible = None if labeled is None else np.flatnonzero(np.isin(rows, labeled))
    fine = None if split.fine_labels is None else hide_labels(split.fine_labels[rows], visible)
    return SplitData(split.name, texts, hide_labels(split.labels[rows], visible), split.row_ids[rows], fine)


class RoundSource(Source):
    """``parent`` with its training split cut down to the positions ``rows``, whose labels are hidden except at
    ``labeled``; validation and test as they are. Its fingerprint names the parent and the labeled rows (which
    rows a round holds is in its training split's fingerprint), so val / test entries are shared by every round."""

    def __init__(self, parent: Source, rows: np.ndarray, labeled: np.ndarray):
        super().__init__(parent.seed)
        self.parent, self.rows, self.labeled = parent, np.asarray(rows, np.int64), np.asarray(labeled, np.int64)

    @property
    def class_names(self) -> list[str]:
        return self.parent.class_names

    def _load(self) -> dict[str, SplitData]:
        return {"train": subset(self.parent.split("train"), self.rows, self.labeled),
                "val": self.parent.split("val"), "test": self.parent.split("test")}

    def fingerprint(self) -> str:
        return fingerprint_of("RoundSource", {"parent": self.parent.fingerprint(),
                                              "labeled": rows_fingerprint(self.labeled)})


class RoundFeaturizer(Featurizer):
    """A round's student inputs: ``featurizer``'s for the whole ``parent`` (featurised once, cached as usual), its
    training rows taken by position, so no round featurises (or runs a smaller encoder over) its rows again."""

    def __init__(self, featurizer: Featurizer, parent: Source, rows: np.ndarray):
        self.featurizer, self.parent, self.rows = featurizer, parent, rows

    @property
    def input_dim(self) -> int:
        return self.featurizer.input_dim

    @property
    def kind(self) -> str | None:
        """The wrapped featuriser's kind (a student checks it in ``start_from``: the transformer's)."""
        return self.featurizer.kind

    def __getattr__(self, name: str):
        """Whatever else a student reads from its featuriser (the static student's distilled table, in
        ``start_from``) is the wrapped featuriser's."""
        if name == "featurizer":  # not set yet (an object being unpickled): no recursion
            raise AttributeError(name)
        return getattr(self.featurizer, name)

    def transform(self, texts):
        return self.featurizer.transform(texts)

    def fingerprint(self) -> str:
        return self.featurizer.fingerprint()

    def prepare(self, source: Source, cache: TeacherCache) -> None:
        self.featurizer.prepare(self.parent, cache)

    def featurize(self, source: Source, split: str, cache: TeacherCache) -> StudentInputs:
        inputs = self.featurizer.featurize(self.parent, split, cache)
        return RowsOf(inputs, self.rows) if split == "train" else inputs


@dataclass
class Spent:
    """Teacher rows actually encoded by this process, and the seconds the teacher ran."""

    rows: int = 0
    seconds: float = 0.0


class QueryStore:
    """Every teacher output an active run may read: the labeled, validation and test rows (the teacher's own
    cache entries of the labeled rows' :class:`RoundSource`) and the pool rows queried so far, kept as cache
    entries of a few rows each (``index.json`` lists them; resumable, atomic, shared by every run on this
    teacher, data and labeled set, so a row encoded once is never encoded again)."""

    def __init__(self, cache: TeacherCache, teacher: Teacher, source: Source, labeled: np.ndarray):
        self.cache, self.teacher, self.source, self.labeled = cache, teacher, source, np.asarray(labeled, np.int64)
        self.seed_plan = CachePlan(cache, teacher, RoundSource(source, self.labeled, self.labeled))
        self.key = cache_key(teacher.fingerprint(), source.fingerprint(), "labeled-" + rows_fingerprint(self.labeled),
                             "queries")
        self.folder = cache.root / f"queries-{self.key}"
        self.spent = Spent()
        self._teacher_ready = False
        self._entries: dict[str, CachedSplit] = {}
        self._chunks: list[CachedSplit] = []  # the seed plan's entries, then every queried chunk
        self._rows: dict[str, dict[int, tuple[int, int]]] = {s: {} for s in SPLITS}  # row id → (chunk, position)

    # -- the labeled, validation and test rows -------------------------------------------------------------
    def prepare(self, progress: bool = True) -> None:
        """Run the teacher (fitted on the labeled rows alone) over the labeled, validation and test rows, once."""
        start = time.perf_counter()
        missing = self.seed_plan.missing()
        rows = sum(len(self.seed_plan.source.split(s)) for s in missing)
        self.seed_plan.build(progress)
        if missing:
            self._teacher_ready = True  # the build fitted it
            self.spent.rows += rows
            self.spent.seconds += time.perf_counter() - start
        self._entries = self.seed_plan.open()
        for split, entry in self._entries.items():
            self._index_entry(split, entry)
        for key in self._chunk_keys():
            self._index_entry("train", self.cache.open(key))

    @property
    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        train = self._entries["train"]
        return np.asarray(train.W), np.asarray(train.b)

    def teacher_error(self, split: str = "val") -> float:
        """The teacher's error rate on the labeled ``split`` (what the adversary's number of mistakes is set from)."""
        entry = self._entries[split]
        return float(np.mean(np.asarray(entry.logits).argmax(1) != np.asarray(entry.label)))

    # -- pool rows -------------------------------------------------------------------------------------------
    def _chunk_keys(self) -> list[str]:
        index = self.folder / "index.json"
        return json.loads(index.read_text()) if index.is_file() else []

    def _index_entry(self, split: str, entry: CachedSplit) -> None:
        self._chunks.append(entry)
        chunk, rows = len(self._chunks) - 1, self._rows[split]
        for position, row in enumerate(np.asarray(entry.row_id).tolist()):
            rows.setdefault(row, (chunk, position))

    def has(self, row_ids: np.ndarray) -> np.ndarray:
        return np.fromiter((int(r) in self._rows["train"] for r in row_ids), bool, len(row_ids))

    def query(self, positions: np.ndarray, progress: bool = True) -> int:
        """Make the teacher's outputs for the training rows at ``positions`` available, running the teacher on
        the ones no run has encoded yet (exactly those); returns how many it encoded."""
        train = self.source.split("train")
        positions = np.asarray(positions, np.int64)
        new = positions[~self.has(train.row_ids[positions])]
        if len(new) == 0:
            return 0
        if not self._teacher_ready:  # a resumed process: load the teacher fitted on the labeled rows (cached)
            self.teacher.fit(self.seed_plan.source, self.cache)
            self._teacher_ready = True
        rows = subset(train, np.sort(new), labeled=np.zeros(0, np.int64))
        key = cache_key(self.key, "chunk", rows_fingerprint(rows.row_ids))
        start = time.perf_counter()
        W, _ = self.classifier
        target = PassTarget(key=key, labels=rows.labels, row_ids=rows.row_ids, embedding_dim=W.shape[1],
                            num_classes=W.shape[0], meta={"queries": self.key, "split": "train", "rows": len(rows)},
                            order=self.teacher.row_order(rows), block_size=self.teacher.batch_size,
                            encode=lambda index: self.teacher.encode_rows(rows, index),
                            classifier=self.teacher.classifier, modules=self.teacher.modules(),
                            desc=f"teacher queries [{len(rows)} rows]")
        if not self.cache.exists(key):
            build_entry(self.cache, target, progress)
            self.spent.rows += len(rows)
            self.spent.seconds += time.perf_counter() - start
        entry = self.cache.open(key)
        if not (np.array_equal(entry.W, W) and np.array_equal(entry.b, self.classifier[1])):
            raise LelpError(f"the teacher queried into {entry.path} is not the one of {self._entries['train'].path} "
                            "(another classifier); delete the queries folder to start over.")
        self._register(key)
        self._index_entry("train", entry)
        return len(rows)

    def _register(self, key: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with locked(self.folder / ".lock"):  # processes sharing the store append one at a time
            keys = self._chunk_keys()
            if key not in keys:
                atomic_write_json(self.folder / "index.json", [*keys, key])

    def lookup(self, split: str, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, logits) of ``row_ids`` of ``split``; a row the teacher never answered is refused."""
        known = self._rows[split]
        missing = [int(r) for r in row_ids if int(r) not in known]
        if missing:
            raise LelpError(f"{split} row {missing[0]} was never queried from the teacher ({len(missing)} such rows); "
                            "an active round distils on queried rows only.")
        where = np.array([known[int(r)] for r in row_ids], dtype=np.int64).reshape(-1, 2)
        W, _ = self.classifier
        embedding = np.empty((len(row_ids), W.shape[1]), np.float32)
        logits = np.empty((len(row_ids), W.shape[0]), np.float32)
        for chunk in np.unique(where[:, 0]):
            mine = np.flatnonzero(where[:, 0] == chunk)
            entry, positions = self._chunks[chunk], where[mine, 1]
            embedding[mine], logits[mine] = entry.embedding[positions], entry.logits[positions]
        return embedding, logits


class QueriedTeacher(Teacher):
    """The teacher as an active round sees it: the outputs in a :class:`QueryStore`, nothing computed."""

    pass_description = "copying the queried teacher outputs (no teacher compute)"

    def __init__(self, store: QueryStore):
        self.store = store
        self.batch_size = 4096

    def fingerprint(self) -> str:
        return fingerprint_of("QueriedTeacher", {"teacher": self.store.teacher.fingerprint(),
                                                 "labeled": rows_fingerprint(self.store.labeled)})

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        raise LelpError("an active round's teacher answers queried rows only, not new texts.")

    def encode_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.store.lookup(split.name, split.row_ids[np.asarray(index)])

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        return self.store.classifier


def pool_positions(num_train: int, labeled: np.ndarray) -> np.ndarray:
    """The training positions that are not labeled: the pool a selector draws from."""
    return np.setdiff1d(np.arange(num_train, dtype=np.int64), labeled)

