"""Shared fixtures: small real data (a few hundred tweets), the real MiniLM teacher, a session-wide cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
LELP = shutil.which("lelp", path=str(Path(sys.executable).parent)) or "lelp"

TINY_TWEETS = {"num_classes": 2, "max_rows": 300, "seed": 0}
TINY_TEACHER = {"encoder": "all-MiniLM-L6-v2", "max_length": 64, "head_hidden": 32, "head_epochs": 5, "seed": 0}


def tiny_tweets():
    from lelp_lightning.sources import Tweets

    return Tweets(**TINY_TWEETS)


def tiny_teacher():
    from lelp_lightning.teachers import SentenceEncoderTeacher

    return SentenceEncoderTeacher(**TINY_TEACHER)


@pytest.fixture(scope="session")
def tweets_cache_dir(tmp_path_factory) -> Path:
    """A teacher cache of 300 real tweets through the real MiniLM teacher, built once per test session."""
    from lelp_lightning.data.datamodule import DistillDataModule
    from lelp_lightning.strategies import LinearProjectionStrategy

    cache = tmp_path_factory.mktemp("cache")
    dm = DistillDataModule(tiny_tweets(), tiny_teacher(), LinearProjectionStrategy(num_subclasses=2),
                           cache_dir=str(cache), progress=False)
    dm.prepare_data()
    return cache


@pytest.fixture
def tweets_datamodule(tweets_cache_dir):
    """A factory: ``tweets_datamodule(strategy, **kwargs)`` → a set-up DistillDataModule on the cached tweets."""
    from lelp_lightning.data.datamodule import DistillDataModule

    def make(strategy, **kwargs):
        dm = DistillDataModule(tiny_tweets(), tiny_teacher(), strategy, cache_dir=str(tweets_cache_dir),
                               progress=False, **kwargs)
        dm.prepare_data()
        dm.setup("fit")
        return dm

    return make


def gaussian_classes(n_per_class=200, dim=12, num_classes=2, seed=0):
    """Embeddings with per-class anisotropic structure and a classifier W that reads the class means."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(num_classes):
        scales = np.linspace(3.0, 0.3, dim) * (1 + c)
        basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        x = rng.normal(size=(n_per_class, dim)) * scales @ basis.T + rng.normal(size=dim) * 2
        xs.append(x)
        ys.append(np.full(n_per_class, c))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    W = rng.normal(size=(num_classes, dim))
    b = rng.normal(size=num_classes)
    return x, y, W, b


def run_lelp(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``lelp`` console script in a subprocess (as a user would, and as DDP needs)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           **(env_extra or {})}
    return subprocess.run([LELP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_logger_config(run_dir: Path, wandb: bool = True) -> Path:
    """A config file that puts the CSV (and offline W&B) logs under ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers = [f"    - class_path: lightning.pytorch.loggers.CSVLogger\n      init_args: {{save_dir: '{run_dir}', name: tiny}}"]
    if wandb:
        loggers.append(f"    - class_path: AutoWandbLogger\n      init_args: {{save_dir: '{run_dir}', offline: true}}")
    path = run_dir / "loggers.yaml"
    path.write_text("trainer:\n  logger:\n" + "\n".join(loggers) + "\n")
    return path


def tiny_run_args(cache_dir: Path, run_dir: Path, *extra: str, wandb: bool = True) -> list[str]:
    """CLI options for a quick real run: 300 tweets, MiniLM teacher, CSV + offline W&B under ``run_dir``."""
    return [
        "--config", str(CONFIGS / "quickstart.yaml"),
        "--config", str(CONFIGS / "data" / "tweets_binary.yaml"),
        "--data.source.max_rows", str(TINY_TWEETS["max_rows"]),
        "--data.teacher.max_length", str(TINY_TEACHER["max_length"]),
        "--data.teacher.head_hidden", str(TINY_TEACHER["head_hidden"]),
        "--data.teacher.head_epochs", str(TINY_TEACHER["head_epochs"]),
        "--data.cache_dir", str(cache_dir),
        "--data.progress", "false",
        "--data.batch_size", "32",
        "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--config", str(write_logger_config(run_dir, wandb)),
        *extra,
    ]
