"""DDP and FSDP2 training, evaluation and the teacher pass with 2 CPU processes (gloo), through the `lelp`
console script in a subprocess, checked against one process on the same data and seed.

What "equal" means here (docs/distributed.md): evaluating one checkpoint under DDP gives exactly the
single-process metrics and predictions; training under DDP or FSDP2 with the same global batch sees the same
rows per update, so it ends with the same weights up to float summation order (max |Δw| < 1e-4 after two
epochs) and the same val / test metrics.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, LELP, TINY_TWEETS, run_lelp, tiny_run_args, write_logger_config

from lelp_lightning.cache import TeacherCache

pytestmark = pytest.mark.slow
CPU = ["--trainer.accelerator", "cpu", "--data.featurizer.num_buckets", "16384", "--data.strategy.num_subclasses", "2"]
DENSE = ["--model.student.init_args.sparse", "false"]  # FSDP2 shards only a densely trained table
TWO = {"ddp": ["--trainer.devices", "2", "--trainer.strategy", "ddp"],  # the sparse bag: gloo all-reduces its rows
       "fsdp": ["--config", str(CONFIGS / "trainer" / "fsdp.yaml"), "--trainer.devices", "2", *DENSE]}


def fit(cache_dir, run_dir, *extra):
    proc = run_lelp("fit", *tiny_run_args(cache_dir, run_dir, *CPU, *extra, wandb=False), cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir / "tiny" / "version_0"


def val_metrics(version: Path) -> list[list[float]]:
    metrics = pd.read_csv(version / "metrics.csv")
    return metrics[["epoch", "val/accuracy", "val/macro_f1"]].dropna().values.tolist()


def weights(version: Path) -> dict:
    return torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def single_run(tweets_cache_dir, tmp_path_factory):
    return fit(tweets_cache_dir, tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def single_dense_run(tweets_cache_dir, tmp_path_factory):
    return fit(tweets_cache_dir, tmp_path_factory.mktemp("single_dense"), *DENSE)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_training_matches_one_process(strategy, request, tweets_cache_dir, tmp_path):
    single_run = request.getfixturevalue("single_dense_run" if strategy == "fsdp" else "single_run")
    version = fit(tweets_cache_dir, tmp_path, *TWO[strategy])
    reference = json.loads((single_run / "summary.json").read_text())
    summary = json.loads((version / "summary.json").read_text())
    assert summary["student"] == reference["student"]
    assert val_metrics(version) == val_metrics(single_run)
    mine, theirs = weights(version), weights(single_run)
    assert mine.keys() == theirs.keys()
    for name in theirs:  # FSDP2 checkpoints hold full, unsharded weights (one file)
        assert mine[name].shape == theirs[name].shape
        torch.testing.assert_close(mine[name], theirs[name], atol=1e-4, rtol=0)
    if strategy == "fsdp":  # its checkpoint tests in one process as it did under FSDP2
        logs = write_logger_config(tmp_path / "eval", wandb=False)
        proc = run_lelp("test", "--config", str(version / "config.yaml"), "--config", str(logs),
                        "--trainer.strategy", "auto", "--trainer.devices", "1",
                        "--ckpt_path", str(version / "checkpoints" / "last.ckpt"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
        tested = pd.read_csv(next((tmp_path / "eval").rglob("metrics.csv")))
        assert tested["test/accuracy"].dropna().item() == pytest.approx(summary["student"]["test_accuracy"], abs=1e-7)


def test_a_checkpoint_evaluates_and_predicts_the_same_under_ddp(single_run, tmp_path):
    ckpt = str(single_run / "checkpoints" / "last.ckpt")
    results = {}
    for name, extra in (("one", ["--trainer.devices", "1"]), ("two", TWO["ddp"])):
        logs = write_logger_config(tmp_path / name, wandb=False)
        for command in ("test", "predict"):
            proc = run_lelp(command, "--config", str(single_run / "config.yaml"), "--config", str(logs), *extra,
                            "--data.eval_batch_size", "7", "--ckpt_path", ckpt, cwd=tmp_path / name)
            assert proc.returncode == 0, (name, command, proc.stderr[-4000:])
        metrics = pd.read_csv(next((tmp_path / name).rglob("metrics.csv")))
        results[name] = (metrics[["test/accuracy", "test/macro_f1"]].dropna().values,
                         pd.read_csv(next((tmp_path / name).rglob("predictions.csv"))))
    np.testing.assert_array_equal(results["two"][0], results["one"][0])  # exact: counts summed over ranks
    one, two = results["one"][1], results["two"][1]
    assert len(two) == len(one) == 60  # every test row once, none duplicated by a distributed sampler
    pd.testing.assert_frame_equal(two, one, check_exact=False, atol=1e-6, rtol=0)


def encoded_rows(stderr: str, name: str) -> tuple[int, int]:
    """(rows written by all ranks, rows cached before the run) from the teacher pass's log lines."""
    lines = [line for line in stderr.splitlines() if f"teacher pass [{name}]: rank" in line]
    assert lines, stderr[-3000:]
    written = sum(int(line.split(" wrote ")[1].split()[0]) for line in lines)
    return written, int(lines[0].split("; ")[1].split()[0])


def test_two_process_cache_build_resumes_after_sigkill_and_equals_one_process_build(tweets_cache_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    args = ["cache", *tiny_run_args(cache_dir, tmp_path, "--trainer.accelerator", "cpu", *TWO["ddp"],
                                    "--data.teacher.batch_size", "8", wandb=False)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([LELP, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    logs = lambda: sum(f.read_text().count("\n") for f in cache_dir.glob("encoder-*.partial/blocks-rank*.log"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and logs() < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks, mid-pass
    proc.wait()
    finished = logs()
    assert finished >= 4 and not list(cache_dir.glob("encoder-*/manifest.json")), "the build was not killed mid-pass"

    resumed = run_lelp(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    written, cached = encoded_rows(resumed.stderr, "features")
    # finished blocks were kept (each holds 1-8 rows: a split's last block is short) and not redone
    assert cached >= finished and written == TINY_TWEETS["max_rows"] - cached
    assert "train: 210 rows" in resumed.stdout and not list(cache_dir.glob("*.partial"))

    reference, built = TeacherCache(tweets_cache_dir), TeacherCache(cache_dir)
    # the session's shared cache may also hold entries other tests added (another teacher on the same rows)
    keys = sorted(p.name for p in cache_dir.iterdir() if p.is_dir())
    assert len(keys) == 6 and set(keys) <= {p.name for p in tweets_cache_dir.iterdir() if p.is_dir()}
    for key in keys:  # other batch composition (8 vs 64 rows) moves floats by ~1e-7
        a, b = reference.open(key), built.open(key)
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_array_equal(a.row_id, b.row_id)
        np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b.logits, a.logits, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b.W, a.W, atol=1e-5, rtol=0)

    again = run_lelp(*args, cwd=tmp_path)
    assert again.returncode == 0 and "teacher cache hit" in again.stderr and "teacher pass [" not in again.stderr


def test_two_process_cache_build_of_a_hugging_face_teacher_equals_one_process_build(tmp_path):
    """A teacher without a label-free stage (tiny random BERT classifier): one distributed pass, bit for bit."""
    from lelp_lightning.cli import build_cli

    def args(cache_dir):
        return tiny_run_args(cache_dir, tmp_path, "--trainer.accelerator", "cpu",
                             "--config", str(CONFIGS / "teacher" / "hf_classifier.yaml"), wandb=False)

    proc = run_lelp("cache", *args(tmp_path / "two"), *TWO["ddp"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert encoded_rows(proc.stderr, "outputs") == (TINY_TWEETS["max_rows"], 0)
    build_cli(args(tmp_path / "one"), run=False).datamodule.prepare_data()
    keys = sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir())
    assert keys == sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_dir()) and len(keys) == 3
    for key in keys:
        a, b = TeacherCache(tmp_path / "one").open(key), TeacherCache(tmp_path / "two").open(key)
        for name in ("embedding", "logits", "label", "row_id", "W", "b"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
