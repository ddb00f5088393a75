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

import lelp_lightning.cache.teacher_cache as tc
from conftest import run_lelp, tiny_run_args
from lelp_lightning.cache import TeacherCache
from lelp_lightning.cli import main
from lelp_lightning.errors import LelpError

# -- the teacher cache: killed at any step ------------------------------------------------------------------

N, D, C = 23, 5, 2
rng = np.random.default_rng(1)
EMB = rng.normal(size=(N, D)).astype(np.float32)
W, B = rng.normal(size=(C, D)).astype(np.float32), rng.normal(size=C).astype(np.float32)
LOGITS = EMB @ W.T + B
LABELS = rng.integers(0, C, N)


class Killed(BaseException):
    """Stands for SIGKILL: raised at the kill point and at every file operation after it (``finally`` blocks
    included), so nothing more reaches the disk."""


def build(cache, encoded):
    def batches(done):
        for lo in range(done, N, 4):
            index = np.arange(N)[::-1][lo: lo + 4]
            encoded.extend(index.tolist())
            yield index, EMB[index], LOGITS[index]

    return cache.build("k", labels=LABELS, row_ids=np.arange(N), embedding_dim=D, num_classes=C, batches=batches,
                       classifier=lambda: (W, B), meta={"what": "kill test"}, progress=False)


def test_a_build_killed_at_any_step_is_never_read_as_complete_and_resumes_without_redoing_rows(tmp_path, monkeypatch):
    """Kill the build before each file operation in turn (array flushes, saves, JSON writes, renames, deletes);
    the entry is then either absent (open refuses it) or complete and correct, and the next build encodes
    exactly the rows whose progress had not been recorded. Progress is recorded after every batch here
    (``RECORD_SECONDS = 0``) so that every batch boundary is a kill point too."""
    monkeypatch.setattr(tc, "RECORD_SECONDS", 0.0)
    steps = [(np, "save"), (np, "savez"), (np.memmap, "flush"), (os, "replace"), (os, "fsync"), (shutil, "rmtree"),
             (Path, "unlink"), (tc, "_atomic_write_json")]
    write_json = tc._atomic_write_json
    kill_at = 0
    while True:
        cache = TeacherCache(tmp_path / f"kill{kill_at}")
        count, recorded = [0], [0]

        def step(real):
            def wrapped(*args, **kwargs):
                count[0] += 1
                if count[0] > kill_at:
                    raise Killed
                result = real(*args, **kwargs)
                if real is write_json and args[0].name == "progress.json":
                    recorded[0] = args[1]["rows_done"]  # the rows the build has durably recorded as done
                return result
            return wrapped

        with monkeypatch.context() as m:
            for owner, name in steps:
                m.setattr(owner, name, step(getattr(owner, name)))
            try:
                build(cache, [])
                break  # kill_at is past the last step: the whole build ran
            except Killed:
                pass
        complete = cache.exists("k")
        if complete:  # killed after the atomic rename: the entry is whole
            np.testing.assert_array_equal(cache.open("k").embedding, EMB)
        else:
            with pytest.raises(LelpError, match="missing or unfinished"):
                cache.open("k")
        encoded = []
        entry = build(cache, encoded)
        assert len(encoded) == (0 if complete else N - recorded[0]), kill_at
        reopened = TeacherCache(cache.root).open("k")  # checksums verified
        for got in (entry, reopened):
            np.testing.assert_array_equal(got.embedding, EMB)
            np.testing.assert_array_equal(got.logits, LOGITS)
            np.testing.assert_array_equal(got.W, W)
        assert [p.name for p in cache.root.iterdir()] == ["k"]  # no partial build left behind
        kill_at += 1
    assert kill_at > 20  # every batch, every file operation of the build was a kill point


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
