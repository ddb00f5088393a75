"""Shared by the throughput benchmarks: the CSV they write (named by hardware and versions), the table they print."""

from __future__ import annotations

import csv
import os
import statistics
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Callback

from benchmarks import provenance

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results" / "throughput"
CACHE = RESULTS / "cache"  # git-ignored: teacher caches the benchmarks build once and reuse


def write_csv(benchmark: str, rows: list[dict], *packages: str) -> Path:
    """Write ``rows`` to ``benchmarks/results/throughput/<benchmark>__<hardware>__<versions>.csv``, the versions
    of torch, lightning and ``packages``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    tags = f"{provenance.hardware_tag()}__{provenance.version_tag('torch', 'lightning', *packages)}"
    path = RESULTS / f"{benchmark}__{tags}.csv"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    widths = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values) -> float:
    return float(statistics.median(values))


def threads_note() -> str:
    return f"torch threads {torch.get_num_threads()}, os cpus {os.cpu_count()}"


class EpochTimer(Callback):
    """Seconds from the start of each training epoch to its end."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def lelp_args(rows: int, run_dir: Path, *extra: str) -> list[str]:
    """`lelp fit` options for the quickstart on ``rows`` real tweets (tiny MiniLM teacher, cached under CACHE),
    with nothing around the loop that the hand-written peer lacks: no logger, checkpoints, validation, bars."""
    return ["--config", str(REPO / "configs" / "quickstart.yaml"),
            "--config", str(REPO / "configs" / "data" / "tweets_binary.yaml"),
            "--data.source.max_rows", str(rows), "--data.cache_dir", str(CACHE), "--data.progress", "false",
            "--data.teacher.max_length", "64", "--data.teacher.head_hidden", "32", "--data.teacher.head_epochs", "5",
            "--trainer.accelerator", "cpu", "--trainer.callbacks=[]", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(run_dir), *extra]


def lelp_objects(rows: int, run_dir: Path, *extra: str):
    """(trainer, model, datamodule) of a `lelp fit` configured by :func:`lelp_args`, its teacher cache built."""
    from lelp_lightning.cli import build_cli

    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    cli = build_cli(lelp_args(rows, run_dir, *extra), run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    return cli.trainer, cli.model, cli.datamodule
