"""Where a cache-hit `lelp fit` of the quickstart spends its time, sparse bag student against the dense one.

    .venv/bin/python -m benchmarks.throughput.fit_breakdown [--rounds 3] [--threads 2]

Each round runs the whole command (`lelp fit --config configs/quickstart.yaml`, teacher cache already built) in a
fresh process for each variant, alternating them, so a slow spell of a shared machine hits both: ``sparse`` is the
student as shipped (sparse table, lazy Adam), ``dense`` the same with ``sparse: false`` (every step updates the
whole 2^18 × 64 table with AdamW: the student before the sparse path). Phases, from the child's timestamps:
startup (process start → CLI imported), cli (parse, instantiate, cache open, featurise), targets (the strategy fit
and z, the model's setup, the sanity check), epochs (training and validation), checkpoint (the epochs' checkpoint
saves, taken out of the epochs), test (the final test pass), exit (summary, teardown). The
record (JSON, immutable, ``benchmarks/results/fit_breakdown/``) keeps every round; the table shows medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "fit_breakdown"
PHASES = ("startup", "cli", "featurise", "targets", "epochs", "checkpoint", "test", "exit")
VARIANTS = {"sparse": [], "dense": ["--model.student.init_args.sparse", "false"]}


def child(out: Path, launched: float, extra: list[str]) -> None:
    """Run the quickstart fit in this process, writing the phase timestamps (wall clock) to ``out``."""
    marks = {"launched": launched, "imported": None}
    from lightning.pytorch import Callback

    from lelp_lightning.cli import main
    from lelp_lightning.data.featurizers import HashedNgramFeaturizer

    marks["imported"] = time.time()
    featurize = HashedNgramFeaturizer.featurize
    spent = []

    def timed_featurize(self, *args, **kwargs):
        start = time.time()
        result = featurize(self, *args, **kwargs)
        spent.append(time.time() - start)
        return result

    HashedNgramFeaturizer.featurize = timed_featurize
    from lightning.pytorch import Trainer

    save_checkpoint, saving = Trainer.save_checkpoint, []

    def timed_save_checkpoint(self, *args, **kwargs):
        start = time.time()
        save_checkpoint(self, *args, **kwargs)
        saving.append(time.time() - start)

    Trainer.save_checkpoint = timed_save_checkpoint

    class Marks(Callback):
        def setup(self, trainer, pl_module, stage):
            marks.setdefault("setup", time.time())  # the first setup is fit's

        def on_train_start(self, trainer, pl_module):
            marks["train_start"] = time.time()

        def on_train_end(self, trainer, pl_module):
            marks["train_end"] = time.time()

        def on_test_start(self, trainer, pl_module):
            marks["test_start"] = time.time()

        def on_test_end(self, trainer, pl_module):
            marks["test_end"] = time.time()

    import lelp_lightning.cli as cli

    original = cli.LelpCLI.before_fit

    def before_fit(self):
        self.trainer.callbacks.append(Marks())
        original(self)

    cli.LelpCLI.before_fit = before_fit
    code = main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--trainer.enable_progress_bar",
                 "false", "--trainer.enable_model_summary", "false", *extra])
    marks["done"] = time.time()
    marks["featurise_seconds"] = sum(spent)
    marks["checkpoint_seconds"] = sum(saving)
    marks["exit_code"] = code
    out.write_text(json.dumps(marks))


def run_variant(variant: str, threads: int, run_root: Path) -> dict:
    """One fresh process of ``variant``: its phases in seconds, fit_seconds and test accuracy from its summary."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    run_dir = Path(tempfile.mkdtemp(dir=run_root))
    extra = [*VARIANTS[variant], "--data.cache_dir", str(REPO / ".lelp_cache")]  # the runs go to run_dir/runs
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    launched = time.time()
    subprocess.run([sys.executable, __file__, "--child", str(out), "--launched", repr(launched), "--", *extra],
                   cwd=run_dir, env=env, check=True, stdout=subprocess.DEVNULL)
    ended = time.time()
    m = json.loads(out.read_text())
    summary = json.loads(next(run_dir.rglob("summary.json")).read_text())
    phases = {"startup": m["imported"] - m["launched"],
              "cli": m["setup"] - m["imported"] - m["featurise_seconds"], "featurise": m["featurise_seconds"],
              "targets": m["train_start"] - m["setup"],
              "epochs": m["train_end"] - m["train_start"] - m["checkpoint_seconds"],
              "checkpoint": m["checkpoint_seconds"],
              "test": m["test_end"] - m["test_start"], "exit": ended - m["test_end"]}
    return {"variant": variant, "phases": phases, "command_seconds": ended - launched,
            "fit_seconds": summary["fit_seconds"], "test_accuracy": summary["student"]["test_accuracy"],
            "teacher_accuracy": summary["teacher"]["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.launched, args.extra)
        return
    from benchmarks import provenance  # here, not at the top: the child runs this file as a plain script

    run_root = Path(tempfile.mkdtemp(prefix="lelp-breakdown-"))
    # the teacher cache must exist: a first run builds it if needed and is not timed
    run_variant("sparse", args.threads, run_root)
    runs = [run_variant(v, args.threads, run_root) for _ in range(args.rounds) for v in VARIANTS]
    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/fit_breakdown.py", "configs")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    record = {"benchmark": "fit_breakdown", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "config": "configs/quickstart.yaml (cache hit)", "variants": VARIANTS, "threads": args.threads,
              "seed": 0, "machine": provenance.machine(), "versions": provenance.versions("torch", "lightning"),
              "runs": runs}
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f"{stamp}_{sha[:10]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    print(f"{provenance.cpu_name()}, {args.threads} threads, medians of {args.rounds} rounds; record {path.name}")
    print(f"{'phase':<12}" + "".join(f"{v:>10}" for v in VARIANTS))
    table = {variant: medians(runs, variant) for variant in VARIANTS}
    for row in [*PHASES, "command", "fit_seconds", "test_acc"]:
        print(f"{row:<12}" + "".join(f"{table[variant][row]:>10.2f}" for variant in VARIANTS))


def medians(runs: list[dict], variant: str) -> dict[str, float]:
    """Per phase, ``command``, ``fit_seconds`` and ``test_acc`` (%): the median over ``variant``'s rounds."""
    mine = [r for r in runs if r["variant"] == variant]
    values = {"command": lambda r: r["command_seconds"], "fit_seconds": lambda r: r["fit_seconds"],
              "test_acc": lambda r: 100 * r["test_accuracy"]}
    values |= {phase: lambda r, phase=phase: r["phases"][phase] for phase in PHASES}
    return {row: statistics.median(value(r) for r in mine) for row, value in values.items()}


def summary() -> str:
    """The README's sentence on the quickstart's speed, from the newest record."""
    path = max(RECORDS.glob("*.json"))  # named <UTC time>_<sha>: the newest sorts last
    record = json.loads(path.read_text())
    sparse, dense = medians(record["runs"], "sparse"), medians(record["runs"], "dense")
    rounds = sum(r["variant"] == "sparse" for r in record["runs"])
    machine = record["machine"]
    return (f"With the teacher cache built and the progress bar off, the whole command takes {sparse['command']:.1f} s "
            f"and its fit {sparse['fit_seconds']:.1f} s (of which {sparse['checkpoint']:.1f} s are the epochs' "
            f"checkpoints), against {dense['command']:.1f} s and {dense['fit_seconds']:.1f} s with the dense table "
            f"(`sparse: false`, test accuracy {dense['test_acc']:.2f}% against {sparse['test_acc']:.2f}%): medians of "
            f"{rounds} alternating rounds on an {machine['cpu']} ({machine['cores']} cores, "
            f"{record['threads']} threads), "
            f"`python -m benchmarks.throughput.fit_breakdown`, record `{path.relative_to(REPO)}`.")


if __name__ == "__main__":
    main()
