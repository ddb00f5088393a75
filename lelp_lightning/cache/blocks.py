"""The one way a cache entry is written: block by block, by one process or many, resumable with any number.

A :class:`PassTarget` fixes an entry's rows in one order that depends only on the data (e.g. longest
first), cut into blocks of ``block_size`` rows. Rank 0 preallocates ``<key>.partial/``; every process then
encodes its blocks and writes their rows straight into the
preallocated arrays with positional writes (``os.pwrite``: disjoint byte ranges, safe for many writers on
one file, also on shared file systems), and appends each finished block's number to its own log
``blocks-rank<r>.log`` only after the rows are synced. A killed build resumes from the union of those logs,
whatever the number of processes then; rank 0 seals the entry (classifier, checksums, manifest last,
atomic rename) once every block is logged. Only the processes of one pass share a partial entry: the pass's
rank 0 holds the entry's lock (:meth:`TeacherCache.lock`) from preparing to sealing it, so another pass or
process building the same entry waits, then finds it finished. :func:`build_entry` is this build with one
process (rank 0); ``lelp cache`` runs it with many (:mod:`lelp_lightning.cache.teacher_pass`). Whole files
(labels, row ids, ``build.json``, classifier, manifest) are written by :mod:`lelp_lightning.fileio`; only the
rows and the logs, written in place by many processes, follow this protocol's own syncs.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from lelp_lightning.cache.teacher_cache import CachedSplit, TeacherCache, check_finite
from lelp_lightning.errors import LelpError


@dataclass
class PassTarget:
    """One cache entry a teacher pass fills, and how: ``encode(row positions) -> (embedding, logits)``."""

    key: str
    labels: np.ndarray
    row_ids: np.ndarray
    embedding_dim: int
    num_classes: int
    meta: dict
    order: np.ndarray
    block_size: int
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    classifier: Callable[[], tuple[np.ndarray, np.ndarray]]
    modules: list[nn.Module] = field(default_factory=list)  # moved to the pass's device by Lightning
    desc: str = "teacher pass"

    @property
    def num_blocks(self) -> int:
        return math.ceil(len(self.order) / self.block_size)

    def block(self, number: int) -> np.ndarray:
        return self.order[number * self.block_size: (number + 1) * self.block_size]


class BlockBuild:
    """The block-wise build of one :class:`PassTarget` in a :class:`TeacherCache`."""

    def __init__(self, cache: TeacherCache, target: PassTarget):
        self.cache = cache
        self.target = target
        self.partial = cache.entry(target.key).with_name(target.key + ".partial")

    def prepare(self) -> None:
        """Rank 0, before any process writes: keep a matching partial build (resume) or start a fresh one."""
        t = self.target
        order_sha = hashlib.sha256(np.ascontiguousarray(t.order, dtype=np.int64).tobytes()).hexdigest()[:16]
        self.cache.start_partial(t.key, labels=t.labels, row_ids=t.row_ids, embedding_dim=t.embedding_dim,
                                 num_classes=t.num_classes,
                                 description={"meta": t.meta, "layout": "blocks", "block_size": t.block_size,
                                              "order": order_sha})

    def done_blocks(self) -> set[int]:
        """Blocks whose rows are written and synced, from every process's log (a torn last line is ignored)."""
        done: set[int] = set()
        for log in self.partial.glob("blocks-rank*.log"):
            text = log.read_text()
            done.update(int(line) for line in text[: text.rfind("\n") + 1].split())
        return done

    def writer(self, rank: int, sync_seconds: float = 1.0) -> BlockWriter:
        return BlockWriter(self.partial, rank, self.target, sync_seconds)

    def finish(self) -> CachedSplit:
        """Rank 0, after every process closed its writer: seal the entry, or say how many blocks are missing."""
        missing = len(set(range(self.target.num_blocks)) - self.done_blocks())
        if missing:
            raise LelpError(f"the {self.target.desc} left {missing} of {self.target.num_blocks} blocks unwritten; "
                            "run `lelp cache` again to finish it.")
        entry = self.cache.finish_partial(self.target.key, self.target.meta, *self.target.classifier())
        for file in [*entry.path.glob("blocks-rank*.log"), entry.path / "build.json"]:  # only the build needed them
            file.unlink()
        return entry


class BlockWriter:
    """One process's writes into a partial entry: rows by ``pwrite``, finished blocks logged after a sync."""

    def __init__(self, partial: Path, rank: int, target: PassTarget, sync_seconds: float):
        self.target = target
        self.sync_seconds = sync_seconds
        self.files = {}
        for name in ("embedding", "logits"):
            offset = np.load(partial / f"{name}.npy", mmap_mode="r").offset
            self.files[name] = (os.open(partial / f"{name}.npy", os.O_WRONLY), offset)
        log = partial / f"blocks-rank{rank}.log"
        text = log.read_bytes() if log.is_file() else b""
        if text and not text.endswith(b"\n"):  # a torn last line (a kill mid-write) must not run into the next one
            os.truncate(log, text.rfind(b"\n") + 1)
        self.log = open(log, "a")  # noqa: SIM115  (held open across write/sync calls; close() closes it)
        self.pending: list[int] = []
        self.last_sync = time.monotonic()
        self.rows_written = 0

    def write(self, block: int, embedding: np.ndarray, logits: np.ndarray) -> None:
        index = self.target.block(block)
        check_finite(index, embedding, logits)
        for name, values in (("embedding", embedding), ("logits", logits)):
            self._write_rows(name, index, np.ascontiguousarray(values, dtype=np.float32))
        self.pending.append(block)
        self.rows_written += len(index)
        if time.monotonic() - self.last_sync >= self.sync_seconds:
            self.sync()

    def _write_rows(self, name: str, index: np.ndarray, values: np.ndarray) -> None:
        fd, offset = self.files[name]
        row_bytes = values.shape[1] * 4
        if row_bytes == 0:
            return
        order = np.argsort(index, kind="stable")
        index, values = index[order], values[order]
        starts = np.flatnonzero(np.diff(index, prepend=-2) != 1)  # runs of consecutive rows: one write each
        for lo, hi in zip(starts, [*starts[1:], len(index)], strict=True):
            os.pwrite(fd, values[lo:hi].tobytes(), offset + int(index[lo]) * row_bytes)

    def sync(self) -> None:
        """Make the written rows durable, then log their blocks as done."""
        if not self.pending:
            return
        for fd, _ in self.files.values():
            os.fsync(fd)
        self.log.write("".join(f"{b}\n" for b in self.pending))
        self.log.flush()
        os.fsync(self.log.fileno())
        self.pending.clear()
        self.last_sync = time.monotonic()

    def close(self) -> None:
        self.sync()
        for fd, _ in self.files.values():
            os.close(fd)
        self.log.close()


def build_entry(cache: TeacherCache, target: PassTarget, progress: bool = True,
                sync_seconds: float = 1.0) -> CachedSplit:
    """Build (or resume building) ``target``'s entry in this process: the many-process build with one rank.

    A failing or killed build keeps every block it had logged; the next call encodes only the others. Finished
    blocks are synced and logged every ``sync_seconds`` (a kill redoes at most that much work) and on the way out.
    The build holds the entry's lock (:meth:`TeacherCache.lock`): a second build of the same entry, in any
    process, waits for it and then opens the finished entry.
    """
    if cache.exists(target.key):
        return cache.open(target.key)
    with cache.lock(target.key, target.desc):
        if cache.exists(target.key):  # another process built it while this one waited for the lock
            return cache.open(target.key)
        build = BlockBuild(cache, target)
        build.prepare()
        done = build.done_blocks()
        writer = build.writer(rank=0, sync_seconds=sync_seconds)
        rows_done = sum(len(target.block(b)) for b in done)
        try:
            with tqdm(total=len(target.order), initial=rows_done, desc=target.desc, unit="row",
                      disable=not progress, dynamic_ncols=True) as bar:
                for block in range(target.num_blocks):
                    if block not in done:
                        writer.write(block, *target.encode(target.block(block)))
                        bar.update(len(target.block(block)))
        finally:
            writer.close()
        return build.finish()
