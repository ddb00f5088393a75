"""Ten fits in one process (``lelp_lightning.cli.fit``) against ten `lelp fit` processes: what startup costs a
search or a tuning study that runs many distillations on one cached teacher, and whether memory is freed.

    .venv/bin/python -m benchmarks.throughput.many_fits [--fits 10] [--epochs 1]

Every fit is the quickstart (cache hit) with ``--trainer.max_epochs`` epochs and a different seed. The in-process
side records its resident memory after each fit (flat when each fit's objects are released). The record (JSON,
immutable) goes to ``benchmarks/results/many_fits/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "many_fits"


def fit_args(seed: int, epochs: int) -> list[str]:
    return ["--config", str(REPO / "configs" / "quickstart.yaml"), "--data.cache_dir", str(REPO / ".lelp_cache"),
            "--seed_everything", str(seed), "--trainer.max_epochs", str(epochs),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def in_process(fits: int, epochs: int) -> dict:
    """Child mode: import once, then ``fits`` fits; seconds and resident memory after each."""
    start = time.perf_counter()
    from lelp_lightning.cli import fit

    imported = time.perf_counter()
    seconds, memory, accuracy = [], [], []
    for seed in range(fits):
        t = time.perf_counter()
        summary = fit(fit_args(seed, epochs))
        seconds.append(time.perf_counter() - t)
        memory.append(rss_mb())
        accuracy.append(summary["student"]["test_accuracy"])
    return {"import_seconds": imported - start, "fit_seconds": seconds, "rss_mb_after_each": memory,
            "test_accuracy": accuracy, "total_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fits", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(in_process(args.fits, args.epochs)))
        return
    from benchmarks import provenance  # here, not at the top: the child runs this file as a plain script

    work = Path(tempfile.mkdtemp(prefix="lelp-many-fits-"))
    env = {**os.environ, "WANDB_MODE": "offline"}
    run = [sys.executable, __file__, "--child", "--fits", str(args.fits), "--epochs", str(args.epochs)]
    start = time.perf_counter()
    one = json.loads(subprocess.run(run, cwd=work, env=env, check=True, capture_output=True, text=True)
                     .stdout.strip().splitlines()[-1])
    one["wall_seconds"] = time.perf_counter() - start
    lelp = str(Path(sys.executable).parent / "lelp")
    separate = []
    for seed in range(args.fits):
        t = time.perf_counter()
        subprocess.run([lelp, "fit", *fit_args(seed, args.epochs)], cwd=work, env=env, check=True,
                       capture_output=True)
        separate.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/many_fits.py", "configs")
    record = {"benchmark": "many_fits", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "fits": args.fits, "epochs": args.epochs, "config": "configs/quickstart.yaml (cache hit)",
              "machine": provenance.machine(), "versions": provenance.versions("torch", "lightning"),
              "one_process": one, "separate_processes_seconds": separate, "peak_child_rss_mb": peak}
    RECORDS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = RECORDS / f"{stamp}_{sha[:10]}.json"
    path.with_suffix(".tmp").write_text(json.dumps(record, indent=1))
    os.replace(path.with_suffix(".tmp"), path)
    total_separate = sum(separate)
    print(f"{provenance.cpu_name()}: {args.fits} fits of {args.epochs} epoch(s); record {path.name}")
    print(f"one process:  {one['wall_seconds']:.1f} s (import {one['import_seconds']:.1f} s, fits "
          f"{' '.join(f'{s:.1f}' for s in one['fit_seconds'])}); RSS after each fit "
          f"{' '.join(f'{m:.0f}' for m in one['rss_mb_after_each'])} MB")
    print(f"{args.fits} processes: {total_separate:.1f} s ({' '.join(f'{s:.1f}' for s in separate)})")
    print(f"saved: {total_separate - one['wall_seconds']:.1f} s, ratio {total_separate / one['wall_seconds']:.2f}")


if __name__ == "__main__":
    main()
