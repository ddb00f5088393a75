"""The accuracy benchmark: every method on real few-class tasks, hyper-parameters chosen on validation, seeds.

    .venv/bin/python -m benchmarks.accuracy.grid              # the whole grid (resumable)
    .venv/bin/python -m benchmarks.accuracy.grid --list       # what would run, per phase, and what is done
    .venv/bin/python -m benchmarks.accuracy.grid --cells rt/mpnet/mlp_minilm/sup --seeds 3
    .venv/bin/python -m benchmarks.report                     # then RESULTS.md from the records

A *cell* is (task, teacher, student, regime); a *run* is (cell, method, hyper-parameters, seed, whether it
is tested). Phases, in order, each waiting for the previous one:

1. ``prepare``: per cell, the teacher pass, the teacher's head and the student's features, built once into
   ``.lelp_cache`` (git-ignored) in this process, so that parallel runs only read caches.
2. ``select``: seed 0, validation only. The student alone picks its learning rate from ``LR_FACTORS`` × the
   student's base rate; vanilla KD picks (τ, learning rate) from ``TAUS`` × ``LR_FACTORS``; every
   distillation method then uses KD's learning rate and τ (so S = 1 is exactly the chosen KD), and picks S
   from ``S_GRID`` (LELP: S × β from ``BETAS``). A method with one candidate (KD α = 0.5, FitNets at KD's τ,
   the oracle at the true S) is not selected. Ties go to the first candidate in grid order.
3. ``final``: the selected configuration of every method, ``--seeds`` seeds, the test split read once each.
4. ``ablation``: on ``ABLATION_CELLS``, LELP's selected configuration with one option changed (S, β,
   null space off, rotation off), tested, ``--seeds`` seeds.

Each run writes one immutable JSON record under ``benchmarks/results/accuracy/records/<cell>/`` (written to a
temporary file, then renamed; an existing record is never rerun nor rewritten): git sha, the resolved
config, seed, versions, machine, metrics, wall time. ``benchmarks/report.py`` turns them into
``benchmarks/RESULTS.md`` (its own step: the report reads every benchmark, so the grid does not import it).
Runs execute in ``--workers`` processes of one thread each (the students are small; two single-threaded
runs beat one two-threaded run on two cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import platform
import sys
import time

from benchmarks import provenance
from benchmarks.accuracy import spec
from benchmarks.accuracy.plan import plan

PREPARE = spec.REPO / "benchmarks" / "results" / "accuracy" / "prepare"
CODE = ("lelp_lightning", "benchmarks/accuracy", "configs")  # what a record depends on: its git_dirty flag


def machine() -> dict:
    """The machine a run or a cache build ran on, as the records have it."""
    return provenance.machine(hostname=platform.node(), load_avg=[round(v, 2) for v in os.getloadavg()])


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lelp_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fit_and_score(args: list[str], test: bool, workers: int) -> dict:
    """Fit the run of ``args`` in this process and score it on validation (and on test when ``test``): the fields
    every run record holds besides its identity (metrics, the teacher's beside them, time, config, provenance)."""
    import torch

    from lelp_lightning.cli import build_cli

    _quiet()
    start = time.perf_counter()
    cli = build_cli(args, run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data)
    fit_s = time.perf_counter() - start
    val = trainer.validate(model, datamodule=data, verbose=False)[0]
    metrics = {"val_accuracy": float(val["val/accuracy"]), "val_macro_f1": float(val["val/macro_f1"])}
    teacher = {f"val_{k}": float(v) for k, v in data.teacher_metrics("val").items()}
    if test:
        scores = trainer.test(model, datamodule=data, verbose=False)[0]
        metrics |= {"test_accuracy": float(scores["test/accuracy"]), "test_macro_f1": float(scores["test/macro_f1"])}
        teacher |= {f"test_{k}": float(v) for k, v in data.teacher_metrics("test").items()}
    return {
        "metrics": metrics, "teacher": teacher, "strategy_report": data.targets.report("val"),
        "wall_s": round(time.perf_counter() - start, 2), "fit_s": round(fit_s, 2), "epochs": trainer.current_epoch,
        "args": args, "config": json.loads(json.dumps(cli.config.as_dict(), default=str)),
        "versions": provenance.versions("torch", "lightning", "torchmetrics", "numpy", "scikit-learn", "transformers"),
        "machine": machine(), "threads": torch.get_num_threads(), "workers": workers,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def execute(run: spec.Run, git: tuple[str, bool], workers: int = 1) -> dict:
    """Train one run in this process and write its record; returns the record."""
    if run.path.is_file():
        return json.loads(run.path.read_text())
    record = {"identity": run.identity(), "key": run.key, "phase": run.phase, "cell": run.cell, "method": run.method,
              "hp": run.hp_dict, "seed": run.seed, "git_sha": git[0], "git_dirty": git[1],
              **fit_and_score(run.args(), run.test, workers)}
    run.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = run.path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run.path)
    return record


def prepare(cell: spec.Cell) -> float:
    """Build the cell's teacher pass, teacher head, student features and the teacher's other representation (when
    a method reads it) into the cache, in this process.

    The first time per cell the seconds it took are kept in ``prepare/<cell>.json`` (a cache hit takes ~1 s).
    """
    from lelp_lightning.cli import build_cli

    _quiet()
    start = time.perf_counter()
    cli = build_cli([*cell.args(), *spec.METHODS["ce"].build({}, 0), "--data.progress", "true",
                     "--trainer.default_root_dir", str(spec.REPO / "runs" / "accuracy" / "prepare")], run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    if any(spec.METHODS[m].representation for m in spec.methods_for(cell)):  # built here, then only read by runs
        cli.datamodule.plan.build_representation(spec.TEACHERS[cell.teacher][2], progress=True)
    seconds = time.perf_counter() - start
    path = PREPARE / f"{cell.name.replace('/', '__')}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cell": cell.name, "seconds": round(seconds, 1), "machine": machine(),
                                    "git_sha": provenance.git_state(*CODE)[0], "created": datetime.datetime.now(
                                        datetime.timezone.utc).isoformat(timespec="seconds")}, indent=1))
    return seconds


def run_phase(runs: list[spec.Run], workers: int, git: tuple[str, bool]) -> int:
    """Run what is not recorded yet; returns how many runs failed."""
    todo = [r for r in runs if not r.path.is_file()]
    failed = 0
    if not todo:
        return failed
    print(f"  {len(todo)} runs to do ({len(runs) - len(todo)} done)", flush=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        futures = {pool.submit(execute, run, git, workers): run for run in todo}
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run = futures[future]
            try:
                record = future.result()
            except Exception as err:  # reported, and the run stays to do; the phase stops after this round
                failed += 1
                print(f"  FAILED {run.cell} {run.method} {run.hp_dict} seed {run.seed}: {err!r}", flush=True)
                continue
            m = record["metrics"]
            shown = (f"test {100 * m['test_accuracy']:.2f}" if "test_accuracy" in m
                     else f"val {100 * m['val_accuracy']:.2f}")
            print(f"  [{i}/{len(todo)} {time.perf_counter() - started:6.0f}s] {run.cell} {run.method} "
                  f"{run.hp_dict} seed {run.seed}: {shown} ({record['wall_s']:.1f} s)", flush=True)
    return failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(spec.DEFAULT_CELLS),
                        help="comma-separated cell names (default: every cell but the legacy ones, which are reported)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phases", default="prepare,select,final,ablation")
    parser.add_argument("--list", action="store_true", help="print the plan and what is done, run nothing")
    parser.add_argument("--prune", action="store_true",
                        help="delete the records the current grid no longer names (after a change of its candidates)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cells.split(",") if c not in spec.CELLS]
    if unknown:
        parser.error(f"unknown cells {unknown}; valid: {', '.join(spec.CELLS)}")
    cells = [spec.CELLS[c] for c in args.cells.split(",")]
    git = provenance.git_state(*CODE)
    phases = args.phases.split(",")
    if args.prune:
        records = {r["key"]: r for r in spec.load_records()}
        named = {run.key for runs in plan(list(spec.CELLS.values()), args.seeds, records).values() for run in runs}
        stale = [p for p in spec.RECORDS.glob("*/*.json") if json.loads(p.read_text())["key"] not in named]
        for path in stale:
            path.unlink()
        print(f"deleted {len(stale)} records the grid no longer names")
        return
    if args.list:
        records = {r["key"]: r for r in spec.load_records()}
        phases = plan(cells, args.seeds, records)
        for phase, runs in phases.items():
            done = sum(r.path.is_file() for r in runs)
            print(f"{phase}: {len(runs)} runs named so far, {done} done")
        for cell in cells:
            counts = ", ".join(f"{phase} {sum(r.path.is_file() for r in mine)}/{len(mine)}"
                               for phase, runs in phases.items() if (mine := [r for r in runs if r.cell == cell.name]))
            print(f"  {cell.name} ({len(spec.methods_for(cell))} methods): {counts} done")
        return
    if "prepare" in phases:
        for cell in cells:
            print(f"prepare {cell.name}", flush=True)
            print(f"  {prepare(cell):.0f} s", flush=True)
    for phase in ("select", "final", "ablation"):
        if phase not in phases:
            continue
        while True:  # selection is two-staged: stage 2's candidates exist once stage 1 is measured
            records = {r["key"]: r for r in spec.load_records()}
            runs = plan(cells, args.seeds, records)[phase]
            if all(r.path.is_file() for r in runs):
                break
            print(f"{phase}", flush=True)
            if run_phase(runs, args.workers, git):
                sys.exit(f"{phase}: some runs failed (above); fix them and rerun: finished runs are kept.")
    print("done; `python -m benchmarks.report` writes benchmarks/RESULTS.md from the records", flush=True)


if __name__ == "__main__":
    main()
