"""TeacherCache: the teacher's outputs for one split, written once, memory-mapped on every later run.

Layout of one entry ``<root>/<key>/``::

    embedding.npy [N,D] float32 · logits.npy [N,C] float32 · label.npy [N] int64 · row_id.npy [N] int64
    classifier.npz (W [C,D], b [C]) · manifest.json (written last: fingerprints, shapes, checksums)

A build writes into ``<key>.partial/`` block by block, by one process or many (:mod:`lelp_lightning.cache.blocks`:
one write protocol, whatever the number of processes), so a killed build resumes without redoing the blocks it
had logged; only a finished build gets its manifest and is renamed to ``<key>/`` in one atomic step. An entry
without a manifest, or whose arrays do not match the manifest's checksums, is never read back as complete. One
build of an entry runs at a time: it holds the file lock ``<root>/.<key>.lock`` (:meth:`TeacherCache.lock`), and
a second one waits for it, then finds the entry finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lelp_lightning import fileio
from lelp_lightning.errors import LelpError

FORMAT_VERSION = 1
ARRAYS = ("embedding", "logits", "label", "row_id")
log = logging.getLogger(__name__)


def cache_key(*parts: str) -> str:
    """A short stable key from fingerprints (teacher, source, split, preprocessing)."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _checksum(array: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = array.reshape(-1) if array.size else array
    step = max(1, (64 << 20) // max(1, array.itemsize))
    for start in range(0, flat.shape[0] if flat.ndim else 0, step):
        h.update(np.ascontiguousarray(flat[start:start + step]).tobytes())
    return h.hexdigest()


def _classifier_checksum(W: np.ndarray, b: np.ndarray) -> str:
    return _checksum(np.concatenate([np.asarray(W, np.float32).reshape(-1), np.asarray(b, np.float32).reshape(-1)]))


def _first_nonfinite_row(array: np.ndarray, chunk_rows: int = 65536) -> int | None:
    """The first row of a (memory-mapped) float array holding NaN or Inf, read in chunks; None if none does."""
    for lo in range(0, array.shape[0], chunk_rows):
        bad = ~np.isfinite(array[lo: lo + chunk_rows]).all(axis=1)
        if bad.any():
            return lo + int(np.argmax(bad))
    return None


@dataclass
class CachedSplit:
    """Read-only memory-mapped views of one finished cache entry."""

    path: Path
    embedding: np.ndarray
    logits: np.ndarray
    label: np.ndarray
    row_id: np.ndarray
    W: np.ndarray
    b: np.ndarray
    manifest: dict

    def __len__(self) -> int:
        return self.label.shape[0]


class TeacherCache:
    """A folder of cache entries, one per (teacher, data, split, preprocessing) key."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.is_symlink() and not self.root.exists():
            raise LelpError(f"the cache folder {self.root} is a broken symbolic link (to {os.readlink(self.root)}); "
                            "point data.cache_dir at a folder, or remove the link.")
        if self.root.exists() and not self.root.is_dir():
            raise LelpError(f"the cache folder {self.root} is a file; point data.cache_dir at a folder.")

    def entry(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.entry(key) / "manifest.json").is_file()

    @contextlib.contextmanager
    def lock(self, key: str, what: str) -> Iterator[None]:
        """Hold the build lock of ``key`` (``<root>/.<key>.lock``, a :func:`~lelp_lightning.fileio.locked` file
        lock): one build of an entry at a time, whatever the processes. Says once, after a second, that it
        waits for another process building ``what``."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".{key}.lock"
        timer = threading.Timer(1.0, log.info, ("waiting for another process building %s (lock %s)", what, path))
        timer.daemon = True
        timer.start()
        try:
            with fileio.locked(path):
                timer.cancel()
                yield
        finally:
            timer.cancel()

    def open(self, key: str, verify: bool = True) -> CachedSplit:
        """Open a finished entry; raises if it is missing, unfinished, its arrays or classifier fail their
        checksums, or (``verify``) its embeddings / logits hold NaN or Inf (a cache written by other means)."""
        path = self.entry(key)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise LelpError(f"teacher cache {path} is missing or unfinished (no manifest.json); rebuild it.")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise LelpError(f"teacher cache manifest {manifest_path} is not valid JSON; delete {path} to "
                            "rebuild.") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise LelpError(f"teacher cache {path} has format {manifest.get('format_version')}, expected "
                            f"{FORMAT_VERSION}; delete it to rebuild.")
        arrays = {}
        for name in ARRAYS:
            try:
                arrays[name] = np.load(path / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as err:
                raise LelpError(f"teacher cache array {path / (name + '.npy')} cannot be read ({err}); "
                                f"delete {path} to rebuild.") from None
            expected = manifest["arrays"][name]
            if list(arrays[name].shape) != expected["shape"]:
                raise LelpError(f"teacher cache array {name}.npy in {path} has shape {list(arrays[name].shape)}, "
                                f"the manifest says {expected['shape']}; delete {path} to rebuild.")
            if verify and _checksum(arrays[name]) != expected["sha256"]:
                raise LelpError(f"teacher cache array {name}.npy in {path} does not match its checksum "
                                f"(corrupted or modified); delete {path} to rebuild.")
            row = _first_nonfinite_row(arrays[name]) if verify and name in ("embedding", "logits") else None
            if row is not None:
                raise LelpError(f"teacher cache array {name}.npy in {path} holds NaN or Inf (first at row {row}); "
                                f"delete {path} to rebuild, and check the teacher's outputs.")
        try:
            with np.load(path / "classifier.npz") as clf:
                W, b = clf["W"], clf["b"]
        except (OSError, ValueError, KeyError) as err:
            raise LelpError(f"teacher cache classifier {path / 'classifier.npz'} cannot be read ({err}); "
                            f"delete {path} to rebuild.") from None
        expected = manifest.get("classifier", {}).get("sha256")  # absent in caches written before it was added
        if verify and expected is not None and _classifier_checksum(W, b) != expected:
            raise LelpError(f"teacher cache classifier {path / 'classifier.npz'} does not match its checksum "
                            f"(corrupted or modified); delete {path} to rebuild.")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise LelpError(f"teacher cache classifier {path / 'classifier.npz'} holds NaN or Inf; delete {path} "
                            "to rebuild, and check the teacher's final layer.")
        return CachedSplit(path, arrays["embedding"], arrays["logits"], arrays["label"], arrays["row_id"],
                           W, b, manifest)

    def start_partial(self, key: str, *, labels: np.ndarray, row_ids: np.ndarray, embedding_dim: int,
                      num_classes: int, description: dict) -> tuple[Path, bool]:
        """The ``<key>.partial`` folder of a build: kept when its ``build.json`` matches (a resume), else
        started afresh with labels, row ids and preallocated embedding/logits arrays. Returns (folder, fresh)."""
        n = int(len(labels))
        partial = self.entry(key).with_name(key + ".partial")
        shape_info = json.loads(json.dumps({"n": n, "embedding_dim": int(embedding_dim),
                                            "num_classes": int(num_classes), **description}, default=str))
        build_file = partial / "build.json"
        if partial.exists():
            try:
                same = json.loads(build_file.read_text()) == shape_info
            except (OSError, json.JSONDecodeError):
                same = False
            if same:
                return partial, False
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        for name, width in (("embedding", embedding_dim), ("logits", num_classes)):
            np.lib.format.open_memmap(partial / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, width))
        labels, row_ids = np.asarray(labels, dtype=np.int64), np.asarray(row_ids, dtype=np.int64)
        fileio.atomic_write(partial / "label.npy", lambda handle: np.save(handle, labels))
        fileio.atomic_write(partial / "row_id.npy", lambda handle: np.save(handle, row_ids))
        fileio.atomic_write_json(build_file, shape_info, sort_keys=True)  # last: a folder without it is started over
        return partial, True

    def finish_partial(self, key: str, meta: dict, W: np.ndarray, b: np.ndarray) -> CachedSplit:
        """Seal a partial entry whose rows are all written: classifier, checksums, manifest last, atomic rename."""
        final = self.entry(key)
        partial = final.with_name(key + ".partial")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise LelpError("the teacher's classifier (W, b) holds NaN or Inf; check the teacher's final layer.")
        fileio.atomic_write(partial / "classifier.npz",  # a handle: np.savez would append .npz to a file name
                            lambda handle: np.savez(handle, W=np.asarray(W, np.float32), b=np.asarray(b, np.float32)))
        arrays = {name: np.load(partial / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        manifest = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "meta": meta,
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _checksum(a)}
                       for name, a in arrays.items()},
            "classifier": {"sha256": _classifier_checksum(W, b)},
        }
        del arrays
        for stale in fileio.temporaries(partial):  # a killed write's: the entry holds only its own files
            stale.unlink()
        fileio.atomic_write_json(partial / "manifest.json", manifest, sort_keys=True)
        if final.exists():  # a stale, unfinished entry under the final name
            shutil.rmtree(final)
        os.replace(partial, final)
        return self.open(key, verify=False)


def check_finite(index: np.ndarray, embedding: np.ndarray, logits: np.ndarray) -> None:
    """Refuse NaN / Inf teacher outputs before they reach the cache."""
    if not (np.isfinite(embedding).all() and np.isfinite(logits).all()):
        raise LelpError(f"the teacher produced NaN or Inf outputs for rows {np.asarray(index)[:5].tolist()}...; "
                        "check the teacher's weights and inputs.")
