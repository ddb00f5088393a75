"""Interrupted work continues exactly: a killed cache build, a training run resumed from a checkpoint."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_lelp, tiny_run_args

import lelp_lightning.cache.blocks as blocks
import lelp_lightning.cache.teacher_cache as tc
from lelp_lightning.cache import BlockBuild, PassTarget, TeacherCache, build_entry
from lelp_lightning.cli import main
from lelp_lightning.errors import LelpError

# -- the teacher cache: killed at any step ------------------------------------------------------------------

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
        self.switch, self.real, self.buffer = switch, open(*args, **kwargs), ""
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
    syncs, block-log writes and flushes, JSON writes, renames, deletes); the entry is then either absent (open
    refuses it) or complete and correct, and the next build encodes exactly the rows of the blocks that had not
    been logged. Blocks are synced and logged after every block here (``sync_seconds=0``) so that every block
    boundary is a kill point too; a kill on the log's flush leaves a torn line. Throughout, no block reaches
    the log before its rows were synced."""
    steps = [(np, "save"), (np, "savez"), (np.lib.format, "open_memmap"), (os, "pwrite"), (os, "fsync"),
             (os, "truncate"), (os, "replace"), (shutil, "rmtree"), (Path, "unlink"), (Path, "mkdir"),
             (tc, "_atomic_write_json")]
    assert NUM_BLOCKS == target([]).num_blocks
    kill_at, progress = 0, set()
    while True:
        cache = TeacherCache(tmp_path / f"kill{kill_at}")
        switch = KillSwitch(kill_at)
        with monkeypatch.context() as m:
            for owner, name in steps:
                m.setattr(owner, name, switch.wrap(name, getattr(owner, name)))
            m.setattr(blocks, "open", switch.open_log, raising=False)  # the block logs only (np.save, json: not)
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
        assert [p.name for p in cache.root.iterdir()] == ["k"], kill_at  # no partial build left behind
        if not complete:  # (a kill between the rename and the deletes leaves the build's files in the entry)
            assert sorted(p.name for p in entry.path.iterdir()) == ENTRY_FILES, kill_at
        kill_at += 1
    # every file operation of the build was a kill point: at least, preparing (mkdir, 2 preallocations, 2 saves,
    # build.json: write, fsync, rename), 7 per block (2+ row writes, 2 syncs, log write, flush, sync) and sealing
    # (classifier, manifest: write, fsync, rename; the entry's rename; 2 deletes)
    assert kill_at >= 8 + 7 * NUM_BLOCKS + 7, kill_at
    assert progress == set(range(NUM_BLOCKS + 1))  # killed with each number of blocks logged


# -- training: resume from a mid-run checkpoint ---------------------------------------------------------------

CHECKPOINT_EVERY_EPOCH = """trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: "{epoch}", save_top_k: -1, every_n_epochs: 1, save_last: true}
"""
RUN = ("--model.student.init_args.dropout", "0.3",  # dropout: torch's RNG is part of what must continue
       "--model.lr", "0.05", "--data.strategy.num_subclasses", "2", "--trainer.max_epochs", "3")


def fit(cache_dir, run_dir, *extra):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints.yaml").write_text(CHECKPOINT_EVERY_EPOCH)
    proc = run_lelp("fit", *tiny_run_args(cache_dir, run_dir, *RUN, "--config", str(run_dir / "checkpoints.yaml"),
                                          *extra, wandb=False), cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir / "tiny" / "version_0", proc


@pytest.fixture(scope="module")
def straight_and_resumed(tweets_cache_dir, tmp_path_factory):
    """One 3-epoch run straight through, and one resumed from the first run's epoch-0 checkpoint (a run
    killed after its first epoch), in fresh processes as on another machine."""
    straight, straight_proc = fit(tweets_cache_dir, tmp_path_factory.mktemp("straight"))
    resumed, resumed_proc = fit(tweets_cache_dir, tmp_path_factory.mktemp("resumed"),
                                "--ckpt_path", str(straight / "checkpoints" / "epoch=0.ckpt"))
    return straight, straight_proc, resumed, resumed_proc


def test_a_resumed_run_ends_exactly_where_the_uninterrupted_one_does(straight_and_resumed):
    straight, _, resumed, _ = straight_and_resumed
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    first = torch.load(straight / "checkpoints" / "epoch=0.ckpt", map_location="cpu", weights_only=False)
    assert not torch.equal(first["state_dict"]["student.head.weight"], a["state_dict"]["student.head.weight"])
    summaries = [json.loads((run / "summary.json").read_text()) for run in (straight, resumed)]
    assert summaries[0]["student"] == summaries[1]["student"]
    val = [pd.read_csv(run / "metrics.csv").dropna(subset=["val/accuracy"]).set_index("epoch") for run in (straight, resumed)]
    for epoch in (1, 2):  # the epochs the resumed run trained itself
        for metric in ("val/accuracy", "val/macro_f1"):
            assert val[0].loc[epoch, metric] == val[1].loc[epoch, metric]


def test_a_resumed_run_restores_the_strategy_instead_of_refitting_it(straight_and_resumed):
    _, straight_proc, resumed, resumed_proc = straight_and_resumed
    fitted = re.search(r"fitted the LinearProjectionStrategy strategy on 210 training rows \(fingerprint (\w+)\)",
                       straight_proc.stderr)
    restored = re.search(r"restored the LinearProjectionStrategy strategy from the checkpoint \(fingerprint (\w+)\); "
                         "it is not refitted", resumed_proc.stderr)
    assert fitted and restored and fitted.group(1) == restored.group(1)
    assert "fitted the" not in resumed_proc.stderr
    saved = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["DistillDataModule"]["teacher_cache"]  # the checkpoint names the teacher outputs it was fitted on


def test_a_checkpoint_with_another_number_of_subclasses_is_refused(straight_and_resumed, tmp_path, monkeypatch, capsys):
    straight, _, _, _ = straight_and_resumed
    monkeypatch.chdir(tmp_path)  # no logger: the run's config.yaml goes to the working folder
    code = main(["test", "--config", str(straight / "config.yaml"), "--data.strategy.num_subclasses", "3",
                 "--trainer.logger", "false", "--ckpt_path", str(straight / "checkpoints" / "last.ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "lelp: error: the checkpoint's student head has C·S = 2·2 = 4 outputs but this run needs C·S = 2·3 = 6; "
        "use the run's own config (--config <run>/config.yaml) or the checkpoint's num_subclasses.")


def test_resuming_with_another_teacher_is_refused(straight_and_resumed, tweets_cache_dir, tmp_path, monkeypatch, capsys):
    """Another teacher head (one more epoch) writes its own cache entries; the checkpoint's strategy was fitted
    on the first teacher's embeddings, so training on from it would use silently wrong targets."""
    straight, _, _, _ = straight_and_resumed
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    shutil.copytree(tweets_cache_dir, cache)  # the encoder's features are reused; only the head retrains
    code = main(["fit", *tiny_run_args(cache, tmp_path, *RUN, "--data.teacher.head_epochs", "6",
                                       "--ckpt_path", str(straight / "checkpoints" / "epoch=0.ckpt"), wandb=False)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"lelp: error: the checkpoint's strategy was fitted on other teacher outputs \(teacher cache "
                        r"\w+\) than this run's .+ \(\w+\); resume with the same teacher and cache \(copy the cache "
                        r"folder along with the checkpoint\) or start a new fit\.", last), last
