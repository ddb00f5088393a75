"""A teacher whose outputs were computed elsewhere (an LLM behind an API, a model on another cluster) and written
to a file: Parquet, JSONL, CSV or NPZ, one row per source row, keyed by row id or by the exact text.

The file holds the teacher's ``logits``, ``log_probs``, ``probs`` or only a hard ``label`` per row, and may hold
its embedding (the input of its final linear layer) and that layer (``W``, ``b``). What it lacks is filled in:
no embedding → a named sentence encoder's output (cached like the encoder + head teacher's features); no final
layer → a least-squares probe from the embedding to the logits on the training rows (LELP's null space needs a
linear classifier); hard labels → smoothed one-hot logits. The format and every default: docs/teachers.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lelp_lightning.cache import PassTarget, TeacherCache
from lelp_lightning.cache.export import OUTPUT_KINDS, PREFIXES, classifier_sidecar, embedding_sidecar, file_format
from lelp_lightning.core import SPLITS, Source, SplitData, fingerprint_of, least_squares_probe
from lelp_lightning.encoders import SentenceEncoder
from lelp_lightning.errors import LelpError
from lelp_lightning.extras import require
from lelp_lightning.sources.text_file import _read_delimited as read_delimited
from lelp_lightning.teachers.base import Teacher

log = logging.getLogger(__name__)
KEYS = ("row_id", "text")
TINY = float(np.finfo(np.float32).tiny)  # a probability of 0 becomes log(TINY) ≈ -87.3, a finite logit
SHOWN = 5  # how many missing or duplicate keys a message names


@dataclass
class _Outputs:
    """A parsed file: keys in the file's row order, logits [N,C] in the source's class order, the optional
    embedding [N,D] and final layer (W [C,D], b [C], rows in the source's class order), and the texts if any."""

    keys: list
    logits: np.ndarray
    embedding: np.ndarray | None
    classifier: tuple[np.ndarray, np.ndarray] | None
    texts: list[str] | None
    kind: str


class FileTeacher(Teacher, name="file",
                  description="A teacher's outputs read from a Parquet / JSONL / CSV / NPZ file, computed elsewhere."):
    """Outputs of a teacher that ran elsewhere, read from ``path`` (format by extension; docs/teachers.md).

    Args:
        path: the file (``.parquet``, ``.jsonl``, ``.csv`` or ``.npz``); its bytes (and those of its sidecars) are
            part of the fingerprint, so a changed file is a new cache entry (default: ``teacher_outputs.parquet`` in
            the working folder).
        key: ``row_id`` (the source's row ids, column ``row_id``) or ``text`` (the exact text, column ``text``).
        outputs: ``logits``, ``log_probs``, ``probs`` or ``label``; ``auto``: the first of them the file has.
        embedding: ``auto`` (the file's ``embedding`` / ``embedding_<i>`` columns or array, else
            ``<file>.embedding.npy`` beside it, else the encoder's output), ``encoder`` (always the encoder's output),
            or the path of a ``.npy`` [N,D] in the file's row order.
        classes: the class order of list-valued output columns (``logits`` as one list per row); default: the
            source's class order. Named columns (``logit_<class>``) and an NPZ's ``classes`` say it themselves.
        label_smoothing: ε of the logits of hard labels, log((1 − ε)·onehot(y) + ε/C).
        sum_tolerance: how far from 1 a row's probabilities (or exp of its log-probabilities) may sum.
        encoder, max_length, batch_size, precision: the sentence encoder whose output is the embedding when the
            file has none (:class:`~lelp_lightning.encoders.SentenceEncoder`), also exposed as the representation
            ``encoder``; ``batch_size`` is also the teacher pass's block size.
    """

    def __init__(self, path: str = "teacher_outputs.parquet", key: str = "row_id", outputs: str = "auto",
                 embedding: str = "auto", classes: list[str] | None = None, label_smoothing: float = 0.05,
                 sum_tolerance: float = 1e-3, encoder: str = "all-MiniLM-L6-v2", max_length: int = 128,
                 batch_size: int = 64, precision: str = "fp32"):
        if key not in KEYS:
            raise LelpError(f"FileTeacher key must be one of {', '.join(KEYS)}, got {key!r}.")
        if outputs not in ("auto", *OUTPUT_KINDS):
            raise LelpError(f"FileTeacher outputs must be one of auto, {', '.join(OUTPUT_KINDS)}, got {outputs!r}.")
        if not 0 < label_smoothing < 1:
            raise LelpError(f"FileTeacher label_smoothing must be in (0, 1), got {label_smoothing}.")
        if not sum_tolerance > 0:
            raise LelpError(f"FileTeacher sum_tolerance must be > 0, got {sum_tolerance}.")
        self.path = str(path)
        self.key = key
        self.outputs = outputs
        self.embedding = embedding
        self.classes = None if classes is None else [str(c) for c in classes]
        self.label_smoothing = label_smoothing
        self.sum_tolerance = sum_tolerance
        self.encoder = SentenceEncoder(encoder, max_length, batch_size, precision)
        self.batch_size = batch_size
        self._hashes: dict[tuple, str] = {}
        self._parsed: tuple[str, tuple, _Outputs] | None = None
        self._index: dict | None = None
        self._classifier: tuple[np.ndarray, np.ndarray] | None = None
        self._features: dict[str, np.ndarray] = {}

    # -- which files, and the fingerprint ------------------------------------------------------------------
    def _format(self) -> str:
        fmt = file_format(self.path)
        file = Path(self.path)
        if file.is_dir() or not file.exists():
            what = "is a folder" if file.is_dir() else "does not exist"
            raise LelpError(f"the teacher-outputs file {self.path!r} {what}; expected a {fmt} file of the "
                            "teacher's outputs (docs/teachers.md).")
        return fmt

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        memo = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo not in self._hashes:
            h = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
            self._hashes[memo] = h.hexdigest()
        return self._hashes[memo]

    def _embedding_file(self, fmt: str) -> Path | None:
        """The ``.npy`` holding the embedding, if it comes from one (the option's path, or the sidecar)."""
        if self.embedding == "encoder":
            return None
        if self.embedding != "auto":
            path = Path(self.embedding)
            if not path.is_file():
                raise LelpError(f"FileTeacher embedding {self.embedding!r} is not a file; expected 'auto', 'encoder' "
                                "or the path of a .npy array [N, D] in the file's row order.")
            return path
        if _has_embedding_columns(_column_names(self.path, fmt)):
            return None
        sidecar = embedding_sidecar(self.path)
        return sidecar if sidecar.is_file() else None

    def _embedding_from_file(self, fmt: str) -> bool:
        return self.embedding != "encoder" and (self._embedding_file(fmt) is not None
                                                or _has_embedding_columns(_column_names(self.path, fmt)))

    def _files(self) -> dict[str, Path]:
        """Every file the outputs are read from: the file, its classifier sidecar, an embedding ``.npy``."""
        fmt = self._format()
        files = {"file": Path(self.path)}
        if fmt != ".npz" and classifier_sidecar(self.path).is_file():
            files["classifier"] = classifier_sidecar(self.path)
        embedding = self._embedding_file(fmt)
        if embedding is not None:
            files["embedding"] = embedding
        return files

    def fingerprint(self) -> str:
        options = {"files": {name: self._sha256(path) for name, path in self._files().items()}, "key": self.key,
                   "outputs": self.outputs, "classes": self.classes,
                   "embedding": self.embedding if self.embedding in ("auto", "encoder") else "npy",
                   "label_smoothing": self.label_smoothing}
        if not self._embedding_from_file(self._format()):
            options["encoder"] = self.encoder.fingerprint()
        return fingerprint_of("FileTeacher", options)

    # -- reading the file ------------------------------------------------------------------------------------
    def _read(self, class_names: list[str]) -> _Outputs:
        """The file parsed and checked (once per file content and class list)."""
        files = self._files()
        memo = tuple(self._sha256(p) for p in files.values()) + tuple(class_names)
        if self._parsed is None or self._parsed[1] != memo:
            self._parsed = (self.path, memo, self._parse(files, class_names))
            self._index = None
        return self._parsed[2]

    def _parse(self, files: dict[str, Path], class_names: list[str]) -> _Outputs:
        fmt = file_format(self.path)
        columns = _read_columns(self.path, fmt)
        n = _num_rows(self.path, columns)
        where = f"the teacher-outputs file {self.path!r}"
        if self.key not in columns:
            raise LelpError(f"{where} has no {self.key!r} column to key its rows by (key: {self.key}); its columns "
                            f"are {_listing(columns)}.")
        keys = _keys(where, self.key, columns[self.key])
        _check_unique(where, self.key, keys)
        texts = None if "text" not in columns else _keys(where, "text", columns["text"])
        kind, raw, file_classes = self._outputs_of(where, columns, n)
        order = _class_order(where, file_classes, class_names)
        if kind == "label":
            logits = self._label_logits(where, raw, class_names)
        elif raw.shape[1] != len(file_classes or class_names):
            raise LelpError(f"{where} has {raw.shape[1]} {kind} per row for the classes "
                            f"{', '.join(file_classes or class_names)}; expected one value per class.")
        else:
            logits = self._to_logits(where, kind, raw[:, order], keys)
        embedding = self._read_embedding(where, fmt, columns, files, n, keys)
        classifier = self._read_classifier(where, fmt, columns, files, file_classes, class_names, kind, embedding)
        return _Outputs(keys, logits.astype(np.float32), embedding, classifier, texts, kind)

    def _outputs_of(self, where: str, columns: dict, n: int) -> tuple[str, np.ndarray | list, list[str] | None]:
        """(kind, raw values [N,C] or labels [N], the file's class order or None) of the outputs the file holds."""
        found = {kind: _output_columns(kind, columns) for kind in OUTPUT_KINDS}
        kind = self.outputs if self.outputs != "auto" else next((k for k in OUTPUT_KINDS if found[k]), None)
        if kind is None or not found[kind]:
            wanted = ("one of " + ", ".join(OUTPUT_KINDS)) if kind is None else kind
            raise LelpError(f"{where} has no {wanted} outputs: expected a column 'label', or for logits, log_probs "
                            "and probs one list-valued column of that name or one column '<prefix><class>' per "
                            f"class (prefixes {', '.join(PREFIXES.values())}); its columns are {_listing(columns)}.")
        names = found[kind]
        if kind == "label":
            return kind, columns["label"], None
        if names == [kind]:  # one list-valued column (an [N,C] array in an NPZ)
            classes = self.classes
            if classes is None and "classes" in columns:
                classes = [str(c) for c in columns["classes"]]
            return kind, _matrix(where, kind, columns[kind], n), classes
        prefix = PREFIXES[kind]
        return kind, np.stack([_floats(where, c, columns[c]) for c in names], 1), [c[len(prefix):] for c in names]

    def _to_logits(self, where: str, kind: str, values: np.ndarray, keys: list) -> np.ndarray:
        bad = np.isnan(values) | (np.isinf(values) & ~((kind == "log_probs") & (values < 0)))
        if kind == "probs":
            bad |= (values < 0) | (values > 1)
        if bad.any():
            rows = np.flatnonzero(bad.any(1))
            expected = "probabilities in [0, 1]" if kind == "probs" else "finite numbers"
            raise LelpError(f"{where} has {kind} that are NaN, infinite or out of range in {len(rows)} row(s) (first "
                            f"{self.key} {_shown([keys[i] for i in rows])}); expected {expected}.")
        if kind == "logits":
            return values
        probs = values if kind == "probs" else np.exp(values)
        off = np.abs(probs.sum(1) - 1) > self.sum_tolerance
        if off.any():
            rows = np.flatnonzero(off)
            raise LelpError(f"{where} has {kind} whose probabilities do not sum to 1 in {len(rows)} row(s) (first "
                            f"{self.key} {_shown([keys[i] for i in rows])}, sum {probs[rows[0]].sum():.6g}); expected "
                            f"each row to sum to 1 within {self.sum_tolerance} (sum_tolerance).")
        if kind == "log_probs":  # softmax(log p) = p: the log-probabilities are logits; log 0 as probs' log(TINY)
            return np.maximum(values, math.log(TINY))
        return np.log(np.clip(values, TINY, None))

    def _label_logits(self, where: str, labels: list, class_names: list[str]) -> np.ndarray:
        """log((1 − ε)·onehot(y) + ε/C): KD on these is label smoothing (docs/teachers.md)."""
        y = _label_indices(where, labels, class_names)
        c, eps = len(class_names), self.label_smoothing
        probs = np.full((len(y), c), eps / c)
        probs[np.arange(len(y)), y] += 1 - eps
        return np.log(probs)

    def _read_embedding(self, where: str, fmt: str, columns: dict, files: dict, n: int,
                        keys: list) -> np.ndarray | None:
        if self.embedding == "encoder":
            return None
        if "embedding" in files:
            try:
                embedding = np.load(files["embedding"], allow_pickle=False)
            except (OSError, ValueError) as err:
                raise LelpError(f"the embedding file {str(files['embedding'])!r} cannot be read as a .npy array "
                                f"({err}); expected a float array [N, D].") from None
            if embedding.ndim != 2 or len(embedding) != n:
                raise LelpError(f"the embedding file {str(files['embedding'])!r} has shape {embedding.shape}; "
                                f"expected [{n}, D], one row per row of {self.path!r}, in its order.")
            embedding = np.asarray(embedding, np.float64)
        elif "embedding" in columns:
            embedding = _matrix(where, "embedding", columns["embedding"], n)
        else:
            names = _embedding_columns(columns)
            if not names:
                return None
            embedding = np.stack([_floats(where, c, columns[c]) for c in names], 1)
        bad = ~np.isfinite(embedding).all(1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise LelpError(f"{where} has an embedding with NaN or Inf in {len(rows)} row(s) (first {self.key} "
                            f"{_shown([keys[i] for i in rows])}); expected finite numbers.")
        return embedding.astype(np.float32)

    def _read_classifier(self, where: str, fmt: str, columns: dict, files: dict, file_classes: list[str] | None,
                         class_names: list[str], kind: str, embedding: np.ndarray | None):
        """(W, b) in the source's class order from the NPZ's arrays ``W``, ``b`` or the classifier sidecar."""
        if fmt == ".npz":
            arrays = {k: columns[k] for k in ("W", "b", "classes") if k in columns}
            holder = where
        elif "classifier" in files:
            try:
                with np.load(files["classifier"], allow_pickle=False) as sidecar:
                    arrays = {k: sidecar[k] for k in sidecar.files}
            except (OSError, ValueError) as err:
                raise LelpError(f"the classifier file {str(files['classifier'])!r} cannot be read ({err}); expected "
                                "an NPZ with arrays W [C, D] and b [C].") from None
            holder = f"the classifier file {str(files['classifier'])!r}"
        else:
            return None
        if "W" not in arrays and "b" not in arrays:
            return None
        if "W" not in arrays or "b" not in arrays:
            raise LelpError(f"{holder} has only one of the arrays W and b; expected both (W [C, D], b [C]).")
        if embedding is None:
            raise LelpError(f"{holder} has a classifier (W, b) but the teacher has no embedding from the file; a "
                            "classifier needs the embedding it reads (columns embedding, or embedding: auto).")
        if kind != "logits":
            raise LelpError(f"{holder} has a classifier (W, b) but {where} holds {kind}; a classifier needs the "
                            "logits it computes (logits = W·embedding + b).")
        W, b = np.asarray(arrays["W"], np.float64), np.asarray(arrays["b"], np.float64)
        c, d = len(class_names), embedding.shape[1]
        if W.shape != (c, d) or b.shape != (c,):
            raise LelpError(f"{holder} has W {W.shape} and b {b.shape}; expected W [{c}, {d}] and b [{c}] for "
                            f"{c} classes and the {d}-d embedding.")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise LelpError(f"{holder} has a classifier (W, b) with NaN or Inf; expected finite numbers.")
        classes = [str(x) for x in arrays["classes"]] if "classes" in arrays else file_classes
        order = _class_order(holder, classes, class_names)
        return W[order].astype(np.float32), b[order].astype(np.float32)

    # -- the teacher -----------------------------------------------------------------------------------------
    def _source_keys(self, split: SplitData, index: np.ndarray | None = None) -> list:
        rows = np.arange(len(split)) if index is None else np.asarray(index)
        if self.key == "row_id":
            return [int(split.row_ids[i]) for i in rows]
        if isinstance(split.texts, np.ndarray):
            raise LelpError("FileTeacher key: text needs a text source; this source's rows are images, so key them "
                            "by row_id.")
        return [split.texts[i] for i in rows]

    def _positions(self, outputs: _Outputs, split: SplitData, index: np.ndarray | None = None) -> np.ndarray:
        """The file rows of ``split``'s rows ``index`` (default: all); a row missing from the file is refused."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(outputs.keys)}
        keys = self._source_keys(split, index)
        positions = np.fromiter((self._index.get(k, -1) for k in keys), np.int64, len(keys))
        missing = np.flatnonzero(positions < 0)
        if len(missing):
            rows = np.arange(len(split)) if index is None else np.asarray(index)
            ids = [int(split.row_ids[rows[i]]) for i in missing]
            by_text = f" (first text {_shown([keys[missing[0]]], 1)})" if self.key == "text" else ""
            raise LelpError(f"the teacher-outputs file {self.path!r} lacks {len(missing)} of the {len(keys)} rows of "
                            f"the {split.name} split (first row ids {_shown(ids)}){by_text}; expected a row for every "
                            f"source row, keyed by {self.key}.")
        return positions

    def pass_targets(self, source: Source, cache: TeacherCache) -> list[PassTarget]:
        """The encoder's output of every split not cached yet, when the file has no embedding (the expensive part:
        a multi-process pass fills it first)."""
        outputs = self._read(source.class_names)  # a bad file is refused before the encoder runs
        for split in SPLITS:
            self._positions(outputs, source.split(split))
        if outputs.embedding is not None:
            return []
        return [self.encoder.feature_target(source, split) for split in SPLITS
                if not cache.exists(self.encoder.feature_key(source, split))]

    def fit(self, source: Source, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
        """Read and check the file, find every split's rows in it, embed them with the encoder if the file has no
        embedding, and take the file's final layer or fit the least-squares probe on every training row (the
        teacher's outputs are label-free, so ``labeled`` does not restrict it)."""
        outputs = self._read(source.class_names)
        positions = {split: self._positions(outputs, source.split(split)) for split in SPLITS}
        if outputs.embedding is None:
            for split in SPLITS:
                self._features[source.split(split).fingerprint()] = self.encoder.features(source, split, cache)
            train = self._features[source.split("train").fingerprint()]
        else:
            train = outputs.embedding[positions["train"]]
        if outputs.classifier is not None:
            self._classifier = outputs.classifier
            return
        logits = outputs.logits[positions["train"]]
        self._classifier = least_squares_probe(train, logits)
        W, b = (np.asarray(a, np.float64) for a in self._classifier)
        residual = sum(((logits[lo: lo + 8192] - np.asarray(train[lo: lo + 8192], np.float64) @ W.T - b) ** 2).sum()
                       for lo in range(0, len(logits), 8192))
        spread = ((logits - logits.mean(0)) ** 2).sum()
        log.info("FileTeacher: the classifier is a least-squares probe from the %s to the file's %s on %d training "
                 "rows (R² %.4f)", "file's embedding" if outputs.embedding is not None else f"{self.encoder.model} "
                 "embedding", outputs.kind, len(logits), 1 - residual / spread if spread else 1.0)

    @property
    def exact_classifier(self) -> bool:
        """Whether :meth:`classifier` is the teacher's own final layer (from the file), not a fitted probe."""
        return self._parsed is not None and self._parsed[2].classifier is not None

    def _require_fit(self) -> _Outputs:
        if self._parsed is None or self._classifier is None:
            raise RuntimeError("FileTeacher.fit must run before the teacher is used.")
        return self._parsed[2]

    def encode_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._require_fit()
        positions = self._positions(outputs, split, index)
        if outputs.embedding is not None:
            embedding = outputs.embedding[positions]
        elif (features := self._features.get(split.fingerprint())) is not None:
            embedding = np.asarray(features[np.asarray(index)], np.float32)
        else:  # rows of no cached split (e.g. an active round's chunk): the encoder runs on them
            embedding = self.encoder.embed([split.texts[i] for i in index])
        return embedding, outputs.logits[positions]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The file's outputs of ``texts`` (looked up by text: the file needs a ``text`` column holding them)."""
        outputs = self._require_fit()
        if outputs.texts is None:
            raise LelpError(f"the teacher-outputs file {self.path!r} has no text column, so the teacher answers its "
                            "source's rows only, not new texts.")
        index = {}
        for i, text in enumerate(outputs.texts):
            index.setdefault(text, i)
        missing = [t for t in texts if t not in index]
        if missing:
            raise LelpError(f"the teacher-outputs file {self.path!r} has no row for {len(missing)} of the "
                            f"{len(texts)} texts (first {_shown(missing, 1)}); a file teacher answers the texts it "
                            "holds only.")
        positions = np.array([index[t] for t in texts], np.int64)
        embedding = (outputs.embedding[positions] if outputs.embedding is not None
                     else self.encoder.embed(list(texts)))
        return embedding, outputs.logits[positions]

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        self._require_fit()
        return self._classifier[0].copy(), self._classifier[1].copy()

    # -- the encoder's output as a representation a strategy may read -----------------------------------------
    def representations(self) -> dict[str, str]:
        return {"encoder": f"the sentence encoder's output ({self.encoder.model}), whatever the file's embedding"}

    def representation_key(self, name: str, source: Source, split: str, key: str) -> str:
        return self.encoder.feature_key(source, split) if name == "encoder" else key

    def representation_target(self, name: str, source: Source, split: str, key: str) -> PassTarget:
        if name != "encoder":
            return super().representation_target(name, source, split, key)
        return self.encoder.feature_target(source, split)


# -- the file's columns --------------------------------------------------------------------------------------------

def _column_names(path: str, fmt: str) -> list[str]:
    """The file's column names (an NPZ's array names), read without parsing its rows."""
    try:
        if fmt == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return list(arrays.files)
        if fmt == ".parquet":
            require("pyarrow", "text", "a Parquet teacher-outputs file")
            import pyarrow.parquet

            return list(pyarrow.parquet.read_schema(path).names)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if fmt == ".csv":
                return next(csv.reader(handle), [])
            first = next((line for line in handle if line.strip()), "{}")
            return list(json.loads(first))
    except LelpError:
        raise
    except Exception as err:
        raise LelpError(f"the teacher-outputs file {path!r} cannot be parsed as {fmt[1:]} ({err}); expected the "
                        "format of docs/teachers.md.") from None


def _read_columns(path: str, fmt: str) -> dict[str, np.ndarray | list]:
    """Every column of the file: NPZ arrays as they are, the others as lists (list-valued cells as lists)."""
    try:
        if fmt == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        if fmt == ".parquet":
            require("pyarrow", "text", "a Parquet teacher-outputs file")
            import pandas as pd

            frame = pd.read_parquet(path)
            return {str(name): frame[name].tolist() for name in frame.columns}
        if fmt == ".jsonl":
            return _read_jsonl(path)
        return _read_csv(path)
    except LelpError:
        raise
    except Exception as err:
        raise LelpError(f"the teacher-outputs file {path!r} cannot be parsed as {fmt[1:]} ({err}); expected the "
                        "format of docs/teachers.md.") from None


def _read_jsonl(path: str) -> dict[str, list]:
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise LelpError(f"the teacher-outputs file {path!r}: line {number} is not a JSON object; "
                                    "expected one object per line.")
                rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _read_csv(path: str) -> dict[str, list]:
    """A CSV file's columns as strings, read as a text source's CSV is (quoted fields exact, a bare CR is text)."""
    frame = read_delimited(Path(path), ",", path)
    return {str(name): frame[name].tolist() for name in frame.columns}


def _num_rows(path: str, columns: dict) -> int:
    lengths = {len(v) for name, v in columns.items() if name not in ("W", "b", "classes")}
    if not lengths or lengths == {0}:
        raise LelpError(f"the teacher-outputs file {path!r} has no rows; expected one row per source row.")
    if len(lengths) > 1:
        raise LelpError(f"the teacher-outputs file {path!r} has arrays of different lengths {sorted(lengths)}; "
                        "expected one row per source row in every array.")
    return lengths.pop()


def _listing(columns: dict) -> str:
    names = list(columns)
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _shown(values: list, count: int = SHOWN) -> str:
    def short(v):
        return repr(v if not isinstance(v, str) or len(v) <= 40 else v[:40] + "…")

    return ", ".join(map(short, values[:count])) + (", …" if len(values) > count else "")


def _has_embedding_columns(names: list[str]) -> bool:
    return "embedding" in names or any(n.startswith("embedding_") and n[10:].isdigit() for n in names)


def _embedding_columns(columns: dict) -> list[str]:
    """The ``embedding_<i>`` columns in the order of i, which must run 0 … D − 1."""
    numbered = sorted((int(n[10:]), n) for n in columns if n.startswith("embedding_") and n[10:].isdigit())
    if [i for i, _ in numbered] != list(range(len(numbered))):
        raise LelpError(f"the embedding columns are numbered {[i for i, _ in numbered][:8]}…; expected embedding_0 "
                        "to embedding_<D-1>, one per dimension.")
    return [n for _, n in numbered]


def _output_columns(kind: str, columns: dict) -> list[str]:
    """The file's columns of the outputs ``kind``: ``[kind]`` (one list column / array), or its per-class columns."""
    if kind == "label":
        return ["label"] if "label" in columns else []
    named = [n for n in columns if n.startswith(PREFIXES[kind])]
    if kind in columns and named:
        raise LelpError(f"the teacher-outputs file has both a {kind!r} column and {named[0]!r}; expected one "
                        "list-valued column or one column per class, not both.")
    return [kind] if kind in columns else named


def _keys(where: str, key: str, values) -> list:
    """The key column as texts or integer row ids, checked."""
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    converted = values if key == "text" else [_as_int(v) for v in values]
    bad = [v for v, k in zip(values, converted, strict=True) if not isinstance(k, str if key == "text" else int)]
    if bad:
        expected = "a text in every row" if key == "text" else "the source's integer row ids"
        raise LelpError(f"{where} has a {key} that is not {'a string' if key == 'text' else 'an integer'} "
                        f"({bad[0]!r}); expected {expected}.")
    return converted


def _as_int(value) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _check_unique(where: str, key: str, keys: list) -> None:
    seen, duplicates = set(), []
    for k in keys:
        if k in seen:
            duplicates.append(k)
        seen.add(k)
    if duplicates:
        distinct = list(dict.fromkeys(duplicates))
        raise LelpError(f"{where} has {len(distinct)} duplicate {key} value(s) (first {_shown(distinct)}); expected "
                        f"one row per {key}.")


def _floats(where: str, name: str, values) -> np.ndarray:
    try:
        array = np.asarray([float(v) if isinstance(v, str) else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        bad = next((v for v in values if not _is_number(v)), None)
        raise LelpError(f"{where} has a value in column {name!r} that is not a number ({bad!r}); expected a number in "
                        "every row.") from None
    if array.ndim != 1:
        raise LelpError(f"{where} has a column {name!r} of shape {array.shape}; expected one number per row.")
    return array


def _is_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return v is not None


def _matrix(where: str, name: str, values, n: int) -> np.ndarray:
    """A list-valued column (lists, arrays or, in CSV, JSON lists) or a 2-D array as float64 [N, K]."""
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype.kind in "fiu":
        return values.astype(np.float64)
    rows = []
    for v in (values.tolist() if isinstance(values, np.ndarray) else values):
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                v = None
        rows.append(v)
    lengths = {len(v) if isinstance(v, (list, tuple, np.ndarray)) else -1 for v in rows}
    if -1 in lengths or len(lengths) != 1:
        raise LelpError(f"{where} has a column {name!r} whose rows are not lists of one length (lengths "
                        f"{sorted(lengths)[:5]}, -1 for a value that is no list); expected a list of numbers per row.")
    try:
        return np.asarray([np.asarray(v, dtype=np.float64) for v in rows]).reshape(n, lengths.pop())
    except (TypeError, ValueError):
        raise LelpError(f"{where} has a column {name!r} holding a value that is not a number; expected a list of "
                        "numbers per row.") from None


def _class_order(where: str, file_classes: list[str] | None, class_names: list[str]) -> np.ndarray | slice:
    """Where each of the source's classes is among the file's (checked: the same classes, any order)."""
    if file_classes is None:
        return slice(None)
    unknown = [c for c in file_classes if c not in class_names]
    if unknown:
        raise LelpError(f"{where} has class {unknown[0]!r} that the source does not have; expected its classes "
                        f"{', '.join(class_names)}.")
    missing = [c for c in class_names if c not in file_classes]
    if missing or len(file_classes) != len(class_names):
        raise LelpError(f"{where} has classes {file_classes} but the source has {class_names}; expected each of the "
                        "source's classes once.")
    return np.array([file_classes.index(c) for c in class_names])


def _label_indices(where: str, labels: list, class_names: list[str]) -> np.ndarray:
    """Hard labels as class indices: class names, or (when no value is a class name) integer indices in [0, C)."""
    values = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    names = {name: i for i, name in enumerate(class_names)}
    as_text = [None if v is None else str(v) for v in values]
    if all(t in names for t in as_text):
        return np.array([names[t] for t in as_text], np.int64)
    if not any(t in names for t in as_text) and all(t is not None and t.lstrip("-").isdigit() for t in as_text):
        indices = np.array([int(t) for t in as_text], np.int64)
        if ((indices >= 0) & (indices < len(class_names))).all():
            return indices
    bad = next(v for v, t in zip(values, as_text, strict=True) if t not in names)
    raise LelpError(f"{where} has the label {bad!r} that the source does not have; expected one of its classes "
                    f"{', '.join(class_names)} (or their indices 0-{len(class_names) - 1}).")
