"""The teacher-outputs file: its format (shared with :class:`~lelp_lightning.teachers.file_teacher.FileTeacher`,
which reads it) and ``lelp cache --export``, which writes a cached teacher's outputs of every split in it.

One row per source row (docs/teachers.md): ``row_id``, ``text``, ``split``, ``label`` (the teacher's predicted
class), ``true_label`` (the row's own label; empty where a semi-supervised run hides it), one ``logit_<class>``
column per class and the embedding (a list column ``embedding``; ``embedding_<i>`` columns in CSV). An NPZ holds
the arrays ``row_id``, ``text``, ``split``, ``label``, ``true_label``, ``logits`` [N,C], ``embedding`` [N,D],
``classes`` [C] and the final layer ``W`` [C,D], ``b`` [C]; the other formats keep ``W``, ``b`` and ``classes`` in
the sidecar ``<file>.classifier.npz``. Floats are written exactly (float32 values, and their shortest decimal
form in JSONL and CSV), so a file read back gives the cache bit for bit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lelp_lightning import fileio
from lelp_lightning.cache.teacher_cache import CachedSplit
from lelp_lightning.core import SPLITS, UNLABELED, Source
from lelp_lightning.errors import LelpError
from lelp_lightning.extras import require

FORMATS = (".parquet", ".jsonl", ".csv", ".npz")
OUTPUT_KINDS = ("logits", "log_probs", "probs", "label")  # the order in which a file's outputs are looked for
PREFIXES = {"logits": "logit_", "log_probs": "log_prob_", "probs": "prob_"}  # one column per class: <prefix><class>


def file_format(path: str | Path) -> str:
    """``path``'s format from its extension (``.parquet``, ``.jsonl``, ``.csv`` or ``.npz``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise LelpError(f"the teacher-outputs file {str(path)!r} has the extension {suffix or '(none)'!r}; expected "
                        f"one of {', '.join(FORMATS)}.")
    return suffix


def classifier_sidecar(path: str | Path) -> Path:
    """Where a Parquet / JSONL / CSV file keeps its classifier (``W``, ``b``, ``classes``): ``<file>.classifier.npz``.
    """
    return Path(f"{path}.classifier.npz")


def embedding_sidecar(path: str | Path) -> Path:
    """Where a file may keep its embedding as an array [N,D] in the file's row order: ``<file>.embedding.npy``."""
    return Path(f"{path}.embedding.npy")


def check_fresh_export_path(path: str | Path) -> Path:
    """``path`` as a place ``lelp cache --export`` may write: a known format whose file (and classifier sidecar) does
    not exist yet (an export never overwrites a file, its own included), in a folder that exists."""
    path = Path(path)
    fmt = file_format(path)
    for target in (path, *([] if fmt == ".npz" else [classifier_sidecar(path)])):
        if target.exists():
            raise LelpError(f"lelp cache --export: {target} exists; an export writes a new file only, so remove it "
                            "or name another path.")
    if not path.parent.is_dir():
        raise LelpError(f"lelp cache --export: the folder {path.parent} does not exist; expected an existing folder.")
    if fmt == ".parquet":
        require("pyarrow", "text", "lelp cache --export to Parquet")
    return path


def _columns(source: Source, entries: dict[str, CachedSplit]) -> dict[str, np.ndarray | list]:
    """Every split's rows in one table: scalar columns as lists or 1-D arrays, logits [N,C] and embedding [N,D]."""
    names = np.array(source.class_names)
    texts = [source.split(s).texts for s in SPLITS]
    logits = np.concatenate([np.asarray(entries[s].logits, np.float32) for s in SPLITS])
    true = np.concatenate([np.asarray(entries[s].label) for s in SPLITS])
    columns = {"row_id": np.concatenate([np.asarray(entries[s].row_id, np.int64) for s in SPLITS])}
    if not any(isinstance(t, np.ndarray) for t in texts):  # image sources have no text to write
        columns["text"] = [text for split_texts in texts for text in split_texts]
    columns["split"] = [s for s in SPLITS for _ in range(len(entries[s]))]
    columns["label"] = names[logits.argmax(1)].tolist() if len(names) else []
    columns["true_label"] = [None if y == UNLABELED else str(names[y]) for y in true.tolist()]
    columns["logits"] = logits
    columns["embedding"] = np.concatenate([np.asarray(entries[s].embedding, np.float32) for s in SPLITS])
    return columns


def export_teacher_outputs(path: str | Path, source: Source, entries: dict[str, CachedSplit]) -> list[Path]:
    """Write ``entries`` (every split's cache entry of one teacher) to ``path`` in its format, atomically; returns
    the files written (the file, and the classifier sidecar unless it is an NPZ)."""
    path = check_fresh_export_path(path)
    fmt = file_format(path)
    columns = _columns(source, entries)
    train = entries["train"]
    classifier = {"W": np.asarray(train.W, np.float32), "b": np.asarray(train.b, np.float32),
                  "classes": np.array(source.class_names, dtype=str)}
    if fmt == ".npz":
        arrays = {name: (np.array(value, dtype=str) if isinstance(value, list) else value)
                  for name, value in columns.items()}
        arrays["true_label"] = np.array(["" if v is None else v for v in columns["true_label"]], dtype=str)
        fileio.atomic_write(path, lambda handle: np.savez(handle, **arrays, **classifier))
        return [path]
    sidecar = classifier_sidecar(path)
    fileio.atomic_write(sidecar, lambda handle: np.savez(handle, **classifier))
    logit_columns = [PREFIXES["logits"] + name for name in source.class_names]
    scalars = [name for name in columns if name not in ("logits", "embedding")]
    if fmt == ".parquet":
        import pandas as pd

        frame = pd.DataFrame({name: columns[name] for name in scalars})
        for i, name in enumerate(logit_columns):
            frame[name] = columns["logits"][:, i]
        frame["embedding"] = list(columns["embedding"])
        fileio.atomic_write_file(path, lambda tmp: frame.to_parquet(tmp, index=False))
    elif fmt == ".jsonl":
        def write_jsonl(handle) -> None:
            for i in range(len(columns["row_id"])):
                row = {name: _plain(columns[name][i]) for name in scalars}
                row.update(zip(logit_columns, columns["logits"][i].tolist(), strict=True))
                row["embedding"] = columns["embedding"][i].tolist()
                handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode())

        fileio.atomic_write(path, write_jsonl)
    else:
        embedding_columns = [f"embedding_{i}" for i in range(columns["embedding"].shape[1])]

        def write_csv(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow([*scalars, *logit_columns, *embedding_columns])
                for i in range(len(columns["row_id"])):
                    writer.writerow([("" if (v := _plain(columns[name][i])) is None else v) for name in scalars]
                                    + [repr(x) for x in columns["logits"][i].tolist()]
                                    + [repr(x) for x in columns["embedding"][i].tolist()])

        fileio.atomic_write_file(path, write_csv)
    return [path, sidecar]


def _plain(value):
    """A numpy scalar as the Python value JSON and CSV write."""
    return value.item() if isinstance(value, np.generic) else value
