"""`lelp search`: LayerNAS against Optuna's random search and TPE at the same number of trials, on two cells.

    .venv/bin/python -m benchmarks.search.layernas_vs_samplers          # both cells (resumable: finished parts kept)
    .venv/bin/python -m benchmarks.search.layernas_vs_samplers --table  # the table and the fronts' plot, from records

Per cell: LayerNAS (H buckets by parameter count, a short proxy fit per candidate) first; random search and TPE then
get exactly as many trials as LayerNAS ran. Each method's best student within 1.0 and 0.25 of the default's
parameters is trained with the cell's full epochs on 3 seeds and tested once; the default architecture (every
layer's first value) is trained the same way as the reference. The method is vanilla KD (τ = 1) with the student's
grid learning rate. One record per cell and method (``benchmarks/results/search/<cell>__<method>.json``, written
once); the studies live in ``runs/search-bench`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

from benchmarks import provenance
from benchmarks.accuracy import spec

RECORDS = spec.REPO / "benchmarks" / "results" / "search"
ROOT = spec.REPO / "runs" / "search-bench"
METHODS = ("layernas", "random", "tpe")
CELLS = {  # cell → (the grid's cell, the space, H, proxy epochs)
    "tweets2/minilm/bag_sparse/sup": (spec.Cell("tweets2", "minilm", "bag_sparse", "sup"), "hashed_bag.yaml", 4, 1),
    "rt/mpnet/mlp_minilm/sup": (spec.Cell("rt", "mpnet", "mlp_minilm", "sup"), "mlp.yaml", 5, 3),
}
BUDGETS = (1.0, 0.25)
SEEDS = 3


def cell_args(name: str) -> list[str]:
    cell = CELLS[name][0]
    student = spec.STUDENTS[cell.student]
    return [*cell.args(), *spec.METHODS["kd"].build({"tau": 1.0}, 0), "--model.lr", str(student.lr),
            "--trainer.enable_progress_bar", "false", "--data.progress", "false"]


def record_path(cell: str, method: str) -> Path:
    return RECORDS / f"{cell.replace('/', '__')}__{method}.json"


def run(cell: str, method: str, n_trials: int | None) -> dict:
    from lelp_lightning.search.study import parse_options, run_search

    path = record_path(cell, method)
    if path.is_file():
        return json.loads(path.read_text())
    _, space, buckets, epochs = CELLS[cell]
    options = ["--search.space", str(spec.REPO / "configs" / "search" / space), "--search.method", method,
               "--search.buckets", str(buckets), "--search.epochs", str(epochs), "--search.seeds", str(SEEDS),
               "--search.budgets", json.dumps(list(BUDGETS)), "--search.root", str(ROOT),
               "--search.name", f"{cell.replace('/', '__')}__{method}"]
    if n_trials:
        options += ["--search.n_trials", str(n_trials)]
    args = cell_args(cell)
    summary = run_search(args, parse_options(options), options)
    folder = ROOT / f"{cell.replace('/', '__')}__{method}"
    import pandas as pd

    front = pd.read_csv(folder / "front.csv")
    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/search")
    record = {"cell": cell, "method": method, "summary": summary, "front": front.to_dict(orient="records"),
              "git_sha": sha, "git_dirty": dirty, "args": [*args, *options], "machine": provenance.machine(),
              "versions": provenance.versions("torch", "lightning", "optuna"),
              "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json.tmp").write_text(json.dumps(record, indent=1, default=str))
    path.with_suffix(".json.tmp").replace(path)
    return record


def default_reference(cell: str) -> dict:
    """The default architecture (the space's first values) trained fully on the same seeds."""
    from lelp_lightning.runs import fit
    from lelp_lightning.search.space import ArchSpace

    path = RECORDS / f"{cell.replace('/', '__')}__default.json"
    if path.is_file():
        return json.loads(path.read_text())
    space = ArchSpace.load(spec.REPO / "configs" / "search" / CELLS[cell][1])
    args = [*cell_args(cell), *space.overrides(tuple(0 for _ in space.layers), {})]
    accs = []
    for seed in range(SEEDS):
        run_dir = ROOT / f"{cell.replace('/', '__')}__default" / f"seed_{seed}"
        summary = fit([*args, "--seed_everything", str(seed), "--trainer.default_root_dir", str(run_dir)])
        accs.append(summary["student"]["test_accuracy"])
    record = {"cell": cell, "method": "default", "test_accuracy": accs, "args": args, "machine": provenance.machine(),
              "git_sha": provenance.git_state("lelp_lightning", "benchmarks/search")[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def run_cell(cell: str) -> None:
    default_reference(cell)
    layernas = run(cell, "layernas", None)
    trials = layernas["summary"]["finished"]
    for method in ("random", "tpe"):
        run(cell, method, trials)


def _pct(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f} ± {100 * (statistics.stdev(values) if len(values) > 1 else 0):.2f}"


def table() -> str:
    lines = ["| cell | method | distinct candidates / trials | best within 1.0 × default (params, test %) "
             "| best within 0.25 × default (params, test %) | default (params, test %) |", "|---|---|---|---|---|---|"]
    for cell in CELLS:
        ref = RECORDS / f"{cell.replace('/', '__')}__default.json"
        default = json.loads(ref.read_text()) if ref.is_file() else None
        for method in METHODS:
            path = record_path(cell, method)
            if not path.is_file():
                continue
            r = json.loads(path.read_text())
            cols = []
            for budget in BUDGETS:
                chosen = next((c for c in r["summary"]["chosen"] if c["budget"] == budget), None)
                if not chosen or not chosen.get("arch"):
                    cols.append("—")
                    continue
                acc = chosen.get("test_accuracy")
                cols.append(f"{chosen['cost']:,.0f} ({chosen['values']}): "
                            + (f"{100 * acc[0]:.2f} ± {100 * acc[1]:.2f}" if acc else "–"))
            ref_col = (f"{r['summary']['default_cost']:,.0f}: {_pct(default['test_accuracy'])}" if default else "—")
            lines.append(f"| {cell} | {method} | {r['summary']['finished']} / {r['summary']['trials']} | {cols[0]} | "
                         f"{cols[1]} | {ref_col} |")
    return "\n".join(lines)


def plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CELLS), figsize=(6 * len(CELLS), 4), squeeze=False)
    for ax, cell in zip(axes[0], CELLS, strict=True):
        for method in METHODS:
            path = record_path(cell, method)
            if not path.is_file():
                continue
            front = [p for p in json.loads(path.read_text())["front"] if p["pareto"]]
            front.sort(key=lambda p: p["cost"])
            ax.step([p["cost"] for p in front], [100 * p["val_accuracy"] for p in front], where="post", marker="o",
                    label=method)
        ax.set_xscale("log")
        ax.set_xlabel("student parameters")
        ax.set_ylabel("validation accuracy (%, proxy training)")
        ax.set_title(cell)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def section() -> list[str]:
    """The RESULTS.md section (``benchmarks/report.py`` puts it after the grid)."""
    if not any(record_path(c, m).is_file() for c in CELLS for m in METHODS):
        return []
    plot(RECORDS / "fronts.png")
    return ["## `lelp search`: LayerNAS against random search and TPE at equal trials", "",
            "`python -m benchmarks.search.layernas_vs_samplers`; records in `benchmarks/results/search/`. "
            "Cost: the student's parameters. "
            "Candidates scored on validation after a short proxy fit; the chosen ones (and the default architecture) "
            f"trained with the cell's epochs on {SEEDS} seeds and tested once. Vanilla KD (τ = 1). Random search and "
            "TPE sample with replacement, so some of their trials repeat a candidate.", "", table(), "",
            "![Pareto fronts](results/search/fronts.png)", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        print(table())
        plot(RECORDS / "fronts.png")
        return
    for cell in args.cells:
        run_cell(cell)


if __name__ == "__main__":
    main()
