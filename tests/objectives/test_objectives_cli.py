"""Every method config in configs/method/ fits end to end on 300 real tweets with the MiniLM teacher."""

import json
import math
import shutil

import pandas as pd
import pytest
import torch
from helpers import CONFIGS, TINY_TEACHER, at_least_majority, run_main, tiny_run_args

from lelp_lightning.cli import main
from lelp_lightning.objectives import objectives

METHOD_CONFIGS = sorted(p.name for p in (CONFIGS / "method").glob("*.yaml"))
EPOCHS = {"fitnets_two_stage.yaml": 3}  # 2 hint epochs, then KD


def fit_in_process(cache_dir, run_dir, *extra):
    args = tiny_run_args(cache_dir, run_dir, "--trainer.log_every_n_steps", "1", *extra, wandb=False)
    assert main(["fit", *args]) == 0
    version = run_dir / "tiny" / "version_0"
    return version, json.loads((version / "summary.json").read_text()), pd.read_csv(version / "metrics.csv")


@pytest.mark.parametrize("config", METHOD_CONFIGS)
def test_objective_config_fits_and_logs_each_term(config, tweets_cache_dir, tmp_path):
    version, summary, metrics = fit_in_process(
        tweets_cache_dir, tmp_path, "--config", str(CONFIGS / "method" / config),
        "--trainer.max_epochs", str(EPOCHS.get(config, 1)))
    assert 0.0 <= summary["student"]["test_accuracy"] <= 1.0
    assert at_least_majority(summary), summary  # measured: 42-45 of 60 test rows, the majority class is 42
    short = {e.class_path: e.name for e in objectives.entries()}
    names = [short[o["class_path"]] for o in summary["config"]["model"]["objectives"]]  # the real classes
    for name in names:
        values = metrics[f"train/{name}"].dropna()
        assert len(values) and values.map(math.isfinite).all()
    if "embedding_matching" in names:  # r is saved, and every parameter (r too) was stepped by the optimiser
        state = torch.load(next((version / "checkpoints").glob("*.ckpt")), map_location="cpu", weights_only=True)
        weights = state["state_dict"]
        r = weights[f"objectives.{names.index('embedding_matching')}.projection.weight"]
        assert r.shape == (TINY_TEACHER["head_hidden"], 64)  # teacher D × student D_s (hashed bag, embed_dim 64)
        optimisers = state["optimizer_states"]  # AdamW, and lazy Adam for the sparse bag's table
        assert sum(len(g["params"]) for o in optimisers for g in o["param_groups"]) \
            == sum(len(o["state"]) for o in optimisers) == sum(k.startswith("student.") for k in weights) + 2


def test_two_stage_fitnets_switches_from_hint_to_kd(tweets_cache_dir, tmp_path):
    _, _, metrics = fit_in_process(tweets_cache_dir, tmp_path,
                                   "--config", str(CONFIGS / "method/fitnets_two_stage.yaml"),
                                   "--trainer.max_epochs", "3")
    train = metrics.dropna(subset=["train/loss"])
    hint = train.dropna(subset=["train/embedding_matching"])["epoch"].unique().tolist()
    kd = train.dropna(subset=["train/kd"])["epoch"].unique().tolist()
    assert hint == [0, 1] and kd == [2]


def test_semi_supervised_slam_through_lelp_fit(tweets_cache_dir, tmp_path):
    """`lelp fit` with 60 labeled rows: CE on them, SLaM on the transfer set; its own cache, its own teacher head."""
    cache = tmp_path / "cache"
    for entry in tweets_cache_dir.iterdir():
        if entry.name.startswith("encoder-"):  # the encoder's features are label-free: reuse them
            shutil.copytree(entry, cache / entry.name)
    objectives = tmp_path / "semi_slam.yaml"
    objectives.write_text("model:\n  objectives:\n    - class_path: ce\n    - class_path: slam\n"
                          "      init_args: {unlabeled_only: true}\n")
    proc = run_main("fit", *tiny_run_args(cache, tmp_path, "--config", str(CONFIGS / "method/slam.yaml"),
                                          "--config", str(CONFIGS / "data/semi_supervised.yaml"),
                                          "--config", str(objectives), "--data.num_labeled", "60",
                                          "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1",
                                          wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running the teacher" in proc.stderr  # a teacher trained on 60 labels is a different teacher
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["config"]["data"]["num_labeled"] == 60
    assert 0.0 <= summary["student"]["test_accuracy"] <= 1.0
    assert at_least_majority(summary), summary
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert {"train/ce", "train/slam"} <= set(metrics.columns)
