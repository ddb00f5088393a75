"""Helpers shared by the tests (plain functions and constants; the fixtures are in conftest.py).

Tests import them as ``from helpers import ...``: pytest puts ``tests/`` on ``sys.path`` (it holds conftest.py
and no ``__init__.py``; the test subfolders are packages under it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
LELP = shutil.which("lelp", path=str(Path(sys.executable).parent)) or "lelp"

TINY_TWEETS = {"num_classes": 2, "max_rows": 300, "seed": 0}
TINY_TEACHER = {"encoder": "all-MiniLM-L6-v2", "max_length": 64, "head_hidden": 32, "head_epochs": 5, "seed": 0}
TINY_BERT = {"vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}


def save_tiny_bert(folder: Path, seed: int = 0, **config) -> str:
    """A tiny randomly initialised BERT (``TINY_BERT``, updated by ``config``) with MiniLM's tokenizer, saved to
    ``folder`` as a local encoder: fast to run, fine-tune or distil, and nothing is downloaded."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lelp_lightning.encoders.sentence import resolve_model_path

    torch.manual_seed(seed)
    BertModel(BertConfig(**{**TINY_BERT, **config})).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2")).save_pretrained(folder)
    return str(folder)


def tiny_tweets():
    from lelp_lightning.sources import Tweets

    return Tweets(**TINY_TWEETS)


def tiny_teacher():
    from lelp_lightning.teachers import SentenceEncoderTeacher

    return SentenceEncoderTeacher(**TINY_TEACHER)


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


# -- running lelp --------------------------------------------------------------------------------------------

def run_lelp(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``lelp`` console script in a subprocess: only where a separate process is the point (DDP, the
    console script's own exit status, a run that must start from a fresh interpreter). Elsewhere use
    :func:`run_main`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           **(env_extra or {})}
    return subprocess.run([LELP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Ran:
    """What an in-process ``lelp`` run left: its exit status, stdout, and stderr with lelp's log lines."""

    returncode: int
    stdout: str
    stderr: str


class _Lines(logging.Handler):
    def __init__(self, sink: io.StringIO):
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("lelp: %(message)s"))  # the console script's format

    def emit(self, record):
        self.sink.write(self.format(record) + "\n")


def run_main(*args: str) -> Ran:
    """``lelp_lightning.cli.main(args)`` in this process, its output captured like :func:`run_lelp`'s.

    Under pytest the root logger already has handlers, so the console script's ``logging.basicConfig`` adds
    none: lelp's log lines (``lelp: teacher cache hit ...``) are collected here and put in ``stderr``. Works
    in fixtures of any scope (``capsys`` is per test). Give the run its own folders (log dir, cache) under a
    tmp path: nothing here changes the working folder."""
    from lelp_lightning.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = _Lines(err)
    logger = logging.getLogger("lelp_lightning")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        logger.removeHandler(handler)
    return Ran(code, out.getvalue(), err.getvalue())


def write_logger_config(run_dir: Path, wandb: bool = True) -> Path:
    """A config file that puts the CSV (and offline W&B) logs under ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers = ["    - class_path: lightning.pytorch.loggers.CSVLogger\n"
               f"      init_args: {{save_dir: '{run_dir}', name: tiny}}"]
    if wandb:
        loggers.append(f"    - class_path: AutoWandbLogger\n      init_args: {{save_dir: '{run_dir}', offline: true}}")
    path = run_dir / "loggers.yaml"
    path.write_text("trainer:\n  logger:\n" + "\n".join(loggers) + "\n")
    return path


def tiny_run_args(cache_dir: Path, run_dir: Path, *extra: str, wandb: bool = True) -> list[str]:
    """CLI options for a quick real run: 300 tweets, MiniLM teacher, CSV + offline W&B under ``run_dir``.

    In process (:func:`run_main`) pass ``wandb=False``: W&B keeps its run in module state, and Lightning's
    logger reuses a run left open, so a second in-process run would log into the first one's."""
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
        "--trainer.default_root_dir", str(run_dir),
        "--config", str(write_logger_config(run_dir, wandb)),
        *extra,
    ]


# -- checking a run's summary --------------------------------------------------------------------------------

def cached_teacher_metrics(cache_dir: Path, datamodule) -> dict[str, float]:
    """The teacher's test accuracy and macro-F1 and the majority-class rate, recomputed here from the cache
    entries ``datamodule`` (built, not set up) reads: argmax of the cached test logits against the cached test
    labels; the majority class is the training split's most frequent label."""
    from sklearn.metrics import f1_score

    from lelp_lightning.cache import TeacherCache

    cache = TeacherCache(cache_dir)
    test, train = cache.open(datamodule.plan.key("test")), cache.open(datamodule.plan.key("train"))
    label, predicted = np.asarray(test.label), np.asarray(test.logits).argmax(1)
    train_label = np.asarray(train.label)
    majority = np.bincount(train_label[train_label >= 0]).argmax()
    return {"accuracy": float((predicted == label).mean()),
            "macro_f1": float(f1_score(label, predicted, average="macro", labels=np.unique(np.r_[label, predicted]))),
            "majority_class_rate": float((label == majority).mean())}


def tiny_tweets_teacher_metrics(cache_dir: Path) -> dict[str, float]:
    """:func:`cached_teacher_metrics` for the tiny tweets and MiniLM teacher (the runs of :func:`tiny_run_args`)."""
    from lelp_lightning.data.datamodule import DistillDataModule
    from lelp_lightning.strategies import LinearProjectionStrategy

    dm = DistillDataModule(tiny_tweets(), tiny_teacher(), LinearProjectionStrategy(num_subclasses=2),
                           cache_dir=str(cache_dir), progress=False)
    return cached_teacher_metrics(cache_dir, dm)


def run_teacher_metrics(cache_dir: Path, args: list[str]) -> dict[str, float]:
    """:func:`cached_teacher_metrics` for the data of a run given by its ``lelp fit`` options (without ``fit``):
    the data module is built from them, as the run built it, but not set up."""
    from lelp_lightning.cli import build_cli

    return cached_teacher_metrics(cache_dir, build_cli(list(args), run=False).datamodule)


def at_least_majority(summary: dict) -> bool:
    """Whether the student's test accuracy in a run's ``summary.json`` is at least the majority-class rate.

    No margin above it: measured over seeds 0-3, every hashed-bag student the suite fits on the 300 tiny tweets
    (60 test rows, 42 of the majority class) scores 42/60 or, rarely, a row or three more; the MiniLM teacher
    itself gets 43/60. A student that guesses (about 30/60) or inverts its classes (18/60) fails it."""
    return summary["student"]["test_accuracy"] >= summary["majority_class_rate"] - 1e-6
