"""A user's own table of labeled texts: CSV, TSV, JSONL or Parquet."""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lelp_lightning.core import SPLITS, UNLABELED, Source, SplitData
from lelp_lightning.errors import LelpError
from lelp_lightning.sources.splitting import stratified_three_way, take


class TextFile(Source):
    """A user's CSV / TSV / JSONL / Parquet file with a text column and a label column.

    Labels may be strings or integers; classes are their sorted unique values in the training rows.
    Messy text is read, not refused: bytes that are not UTF-8 become U+FFFD (the replacement character) in
    CSV / TSV / JSONL files, and an empty or missing text becomes ``""`` (an empty bag: the student sees zeros).
    With ``split_column`` the file says which rows are train/val/test; otherwise a stratified split with
    ``val_fraction`` / ``test_fraction`` is drawn under ``seed``. With ``fine_label_column`` the file names each
    row's known subclass (a topic inside a sentiment, say): the ``oracle`` strategy reads it, and the run's summary
    reports how its pseudo-subclasses agree with it (NMI); an empty value there is unknown.
    """

    def __init__(self, path: str, text_column: str = "text", label_column: str = "label",
                 split_column: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0, fine_label_column: str | None = None):
        super().__init__(seed)
        self.path = str(path)
        self.text_column = text_column
        self.label_column = label_column
        self.split_column = split_column
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.fine_label_column = fine_label_column
        self._frame: pd.DataFrame | None = None

    def options(self) -> dict:
        opts = super().options()
        if self.fine_label_column is None:  # the fingerprint (and teacher cache key) a file had before the option
            del opts["fine_label_column"]
        stat = _file_stat(self.path)
        opts["file"] = stat
        return opts

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = read_table(self.path, [self.text_column, self.label_column]
                                     + ([self.split_column] if self.split_column else [])
                                     + ([self.fine_label_column] if self.fine_label_column else []))
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
        fine = _fine_label_ids(df[self.fine_label_column]) if self.fine_label_column else None
        if self.split_column:
            values = df[self.split_column].astype(str).str.lower().to_numpy()
            bad = sorted(set(values) - set(SPLITS))
            if bad:
                raise LelpError(f"{self.path}: column {self.split_column!r} has values {bad}; "
                                "expected train, val or test.")
            parts = [np.flatnonzero(values == s) for s in SPLITS]
        else:
            counts = np.bincount(labels, minlength=len(names))
            if counts.min() < 3:
                rare = [names[i] for i in np.flatnonzero(counts < 3)]
                raise LelpError(f"{self.path}: label(s) {rare} have fewer than 3 rows; a stratified "
                                "train/val/test split needs at least 3 per label.")
            parts = stratified_three_way(labels, self.val_fraction, self.test_fraction, self.seed)
        return {s: take(s, texts, labels, p, fine) for s, p in zip(SPLITS, parts, strict=True)}


def _fine_label_ids(values: pd.Series) -> np.ndarray:
    """Fine labels as integer ids (their sorted distinct values over the whole file); an empty one is -1."""
    def known(v) -> bool:
        return not (v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "")

    names = sorted({str(v) for v in values if known(v)}, key=_label_key)
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[str(v)] if known(v) else UNLABELED for v in values], dtype=np.int64)


def _label_key(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _check_is_file(path: str) -> None:
    """A missing path and a folder are named as such."""
    p = Path(path)
    if p.is_dir():
        raise LelpError(f"data file {path!r} is a directory; expected a CSV, TSV, JSONL or Parquet file.")
    if not p.is_file():
        raise LelpError(f"data file {path!r} does not exist; expected a CSV, TSV, JSONL or Parquet file.")


def _file_stat(path: str) -> dict:
    _check_is_file(path)
    st = os.stat(path)
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
    # the csv module refuses a field over 131,072 characters by default; the whole file is in memory already
    csv.field_size_limit(max(csv.field_size_limit(), min(len(text) + 1, 2**31 - 1)))
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
    _check_is_file(path)
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
