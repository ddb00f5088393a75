"""A killed teacher-cache build: never read as complete, and resumed without redoing the rows it logged."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import lelp_lightning.cache.blocks as blocks
from lelp_lightning import fileio
from lelp_lightning.cache import BlockBuild, PassTarget, TeacherCache, build_entry
from lelp_lightning.errors import LelpError

N, D, C = 23, 5, 2
rng = np.random.default_rng(1)
EMB = rng.normal(size=(N, D)).astype(np.float32)
W, B = rng.normal(size=(C, D)).astype(np.float32), rng.normal(size=C).astype(np.float32)
LOGITS = EMB @ W.T + B
LABELS = rng.integers(0, C, N)
ORDER = rng.permutation(N)  # a scattered order: a block's rows take several positional writes
BLOCK = 4
NUM_BLOCKS = 6


class Killed(BaseException):
    """Stands for SIGKILL: raised at the kill point and at every file operation after it (``finally`` blocks
    included), so nothing more reaches the disk."""


def target(encoded):
    def encode(index):
        encoded.extend(index.tolist())
        return EMB[index], LOGITS[index]

    return PassTarget(key="k", labels=LABELS, row_ids=np.arange(N), embedding_dim=D, num_classes=C,
                      meta={"what": "kill test"}, order=ORDER, block_size=BLOCK, encode=encode,
                      classifier=lambda: (W, B))


def build(cache, encoded, sync_seconds=1.0):
    return build_entry(cache, target(encoded), progress=False, sync_seconds=sync_seconds)


ENTRY_FILES = ["classifier.npz", "embedding.npy", "label.npy", "logits.npy", "manifest.json", "row_id.npy"]


class KillSwitch:
    """Counts a build's file operations and kills it (:class:`Killed`) at operation ``kill_at + 1`` and every
    one after it. It also records which blocks' log lines reached the file (the build's durable progress) and
    checks that no block is logged while rows written with ``os.pwrite`` are not fsynced yet."""

    def __init__(self, kill_at: int):
        self.kill_at, self.count = kill_at, 0
        self.logged: set[int] = set()
        self.unsynced: set[int] = set()  # file descriptors with row writes not fsynced yet
        self.opened = []

    def point(self) -> None:
        self.count += 1
        if self.count > self.kill_at:
            raise Killed

    def wrap(self, name, real):
        def wrapped(*args, **kwargs):
            self.point()
            result = real(*args, **kwargs)
            if name == "pwrite":
                self.unsynced.add(args[0])
            elif name == "fsync":
                self.unsynced.discard(args[0])
            return result
        return wrapped

    def open_log(self, *args, **kwargs):
        return BlockLog(self, *args, **kwargs)


class BlockLog:
    """A block log as a killed process leaves it: what was written reaches the file at flush; a kill that lands
    on that flush lets half of it through (a torn write)."""

    def __init__(self, switch: KillSwitch, *args, **kwargs):
        switch.point()
        # this object is the log's file: the real one stays open past __init__, and its close() closes it
        self.switch, self.real, self.buffer = switch, open(*args, **kwargs), ""  # noqa: SIM115  (held open)
        switch.opened.append(self.real)

    def write(self, text):
        self.switch.point()
        self.buffer += text

    def flush(self):
        text, self.buffer, torn = self.buffer, "", False
        try:
            self.switch.point()
        except Killed:
            if self.switch.count != self.switch.kill_at + 1:
                raise
            text, torn = text[: len(text) // 2], True  # killed in this write: part of it reached the file
        assert not self.switch.unsynced, "blocks were logged before their rows were synced"
        self.real.write(text)
        self.real.flush()
        self.switch.logged.update(int(line) for line in text[: text.rfind("\n") + 1].split())  # whole lines
        if torn:
            raise Killed

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.switch.point()
        self.real.close()


def test_a_build_killed_at_any_step_is_never_read_as_complete_and_resumes_without_redoing_rows(tmp_path, monkeypatch):
    """Kill the block build before each file operation in turn (preallocation, saves, positional row writes,
    syncs, block-log writes and flushes, whole-file writes, renames, deletes); the entry is then either absent (open
    refuses it) or complete and correct, and the next build encodes exactly the rows of the blocks that had not
    been logged. Blocks are synced and logged after every block here (``sync_seconds=0``) so that every block
    boundary is a kill point too; a kill on the log's flush leaves a torn line. Throughout, no block reaches
    the log before its rows were synced."""
    steps = [(np, "save"), (np, "savez"), (np.lib.format, "open_memmap"), (os, "pwrite"), (os, "fsync"),
             (os, "truncate"), (os, "replace"), (shutil, "rmtree"), (Path, "unlink"), (Path, "mkdir"),
             (fileio, "atomic_write")]
    assert target([]).num_blocks == NUM_BLOCKS
    kill_at, progress, killed_pid = 0, set(), os.getpid() + 1
    while True:
        cache = TeacherCache(tmp_path / f"kill{kill_at}")
        switch = KillSwitch(kill_at)
        with monkeypatch.context() as m:
            for owner, name in steps:
                m.setattr(owner, name, switch.wrap(name, getattr(owner, name)))
            m.setattr(blocks, "open", switch.open_log, raising=False)  # the block logs only (np.save, json: not)
            m.setattr(os, "getpid", lambda: killed_pid)  # the resuming process is another one
            try:
                build(cache, [], sync_seconds=0.0)
                break  # kill_at is past the last step: the whole build ran
            except Killed:
                pass
            finally:
                for file in switch.opened:
                    file.close()
        complete = cache.exists("k")
        progress.add(len(switch.logged))
        if complete:  # killed after the atomic rename: the entry is whole
            np.testing.assert_array_equal(cache.open("k").embedding, EMB)
        else:
            with pytest.raises(LelpError, match="missing or unfinished"):
                cache.open("k")
            assert BlockBuild(cache, target([])).done_blocks() == switch.logged, kill_at  # a torn line is no block
        encoded = []
        entry = build(cache, encoded)
        unlogged = [row for b in range(NUM_BLOCKS) if b not in switch.logged for row in target([]).block(b)]
        assert sorted(encoded) == ([] if complete else sorted(unlogged)), kill_at
        reopened = TeacherCache(cache.root).open("k")  # checksums verified
        for got in (entry, reopened):
            np.testing.assert_array_equal(got.embedding, EMB)
            np.testing.assert_array_equal(got.logits, LOGITS)
            np.testing.assert_array_equal(got.label, LABELS)
            np.testing.assert_array_equal(got.W, W)
        assert sorted(p.name for p in cache.root.iterdir()) == [".k.lock", "k"], kill_at  # no partial build left
        if not complete:  # (a kill between the rename and the deletes leaves the build's files in the entry)
            assert sorted(p.name for p in entry.path.iterdir()) == ENTRY_FILES, kill_at
        kill_at += 1
    # every file operation of the build was a kill point: at least, preparing (mkdir, 2 preallocations, 2 saves,
    # build.json: write, fsync, rename), 7 per block (2+ row writes, 2 syncs, log write, flush, sync) and sealing
    # (classifier, manifest: write, fsync, rename; the entry's rename; 2 deletes)
    assert kill_at >= 8 + 7 * NUM_BLOCKS + 7, kill_at
    assert progress == set(range(NUM_BLOCKS + 1))  # killed with each number of blocks logged
