"""`lelp active`: student test accuracy against teacher queries, for every selector, on two cells.

    .venv/bin/python -m benchmarks.active.accuracy_vs_queries --cells rt/mpnet/mlp_minilm/few  # run (resumable)
    .venv/bin/python -m benchmarks.active.accuracy_vs_queries --table                          # table + plot

A cell is a grid cell in the semi-supervised regime (1,000 labels; the rest of the training split is the pool).
Every selector runs at 10 / 20 / 30 / 50 % of the pool, spent in 3 rounds, on 3 seeds (the seed sets the student's
initialisation and batch order and the selector's draws; the labeled rows and so the teacher stay fixed); the
references are the labeled rows alone (round 0 of every run) and distilling on the whole pool: an ordinary
``lelp fit`` with the same labeled rows (the grid's "few" regime), 3 seeds. The method is vanilla KD (τ = 1,
the grid's selection on rt few) and the student's own learning rate and epochs (per round) from the grid's spec.

Every run's record (``benchmarks/results/active/<cell>/<selector>__<budget>__seed<s>.json``, written once) holds the
test accuracy read once at the end, the validation accuracy of each round, the teacher rows the run needed and those
it encoded itself with their seconds (the query store is shared, so a row another run queried is not encoded again:
the teacher's cost of a budget is rows needed × the measured seconds per row). Runs live in ``runs/active-bench``
(git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

from benchmarks import provenance
from benchmarks.accuracy import spec

RECORDS = spec.REPO / "benchmarks" / "results" / "active"
ROOT = spec.REPO / "runs" / "active-bench"
SELECTORS = ("random", "margin", "entropy", "confident_teacher_uncertain_student", "rad")
BUDGETS = (0.1, 0.2, 0.3, 0.5)
SEEDS = (0, 1, 2)
ROUNDS = 3
CELLS = {  # name → the grid's cell (its task, teacher, student; the few-label regime)
    "rt/mpnet/mlp_minilm/few": spec.Cell("rt", "mpnet", "mlp_minilm", "few"),
    "tweets2/mpnet/mlp_minilm/few": spec.Cell("tweets2", "mpnet", "mlp_minilm", "few"),
}


def cell_args(name: str, seed: int) -> list[str]:
    cell = CELLS[name]
    student = spec.STUDENTS[cell.student]
    kd = spec.METHODS["kd"].build({"tau": 1.0}, seed)
    return [*cell.args(), *kd, "--model.lr", str(student.lr), "--seed_everything", str(seed),
            "--trainer.enable_progress_bar", "false", "--data.progress", "false"]


def record_path(cell: str, selector: str, budget: float, seed: int) -> Path:
    return RECORDS / cell.replace("/", "__") / f"{selector}__{budget:g}__seed{seed}.json"


def provenance_fields(args: list[str]) -> dict:
    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/active")
    return {"git_sha": sha, "git_dirty": dirty, "args": args, "machine": provenance.machine(),
            "versions": provenance.versions("torch", "lightning", "numpy"),
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_once(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def run_active(cell: str, selector: str, budget: float, seed: int) -> dict:
    from lelp_lightning.active.loop import parse_options
    from lelp_lightning.active.loop import run_active as active

    path = record_path(cell, selector, budget, seed)
    if path.is_file():
        return json.loads(path.read_text())
    name = f"{cell.replace('/', '__')}/{selector}__{budget:g}__seed{seed}"
    options = ["--active.selector", selector, "--active.budget", str(budget), "--active.rounds", str(ROUNDS),
               "--active.root", str(ROOT), "--active.name", name, "--active.seed", str(seed),
               "--active.progress", "false"]
    args = cell_args(cell, seed)
    summary = active(args, parse_options(options))
    record = {"cell": cell, "selector": selector, "budget": budget, "seed": seed, "kind": "active",
              "summary": summary, **provenance_fields([*args, *options])}
    write_once(path, record)
    return record


def run_full_pool(cell: str, seed: int) -> dict:
    """Distilling on the whole pool: ``lelp fit`` with the same labeled rows (the teacher on every pool row)."""
    from lelp_lightning.runs import fit

    path = record_path(cell, "full_pool", 1.0, seed)
    if path.is_file():
        return json.loads(path.read_text())
    args = [*cell_args(cell, seed),
            "--trainer.default_root_dir", str(ROOT / cell.replace("/", "__") / f"full_pool_{seed}")]
    summary = fit(args)
    record = {"cell": cell, "selector": "full_pool", "budget": 1.0, "seed": seed, "kind": "fit",
              "summary": {"student": summary["student"], "teacher": summary["teacher"],
                          "fit_seconds": summary["fit_seconds"]}, **provenance_fields(args)}
    write_once(path, record)
    return record


def run_cell(cell: str) -> None:
    for seed in SEEDS:
        run_full_pool(cell, seed)
    for budget in BUDGETS:
        for selector in SELECTORS:
            for seed in SEEDS:
                record = run_active(cell, selector, budget, seed)
                print(f"{cell} {selector} {budget:g} seed {seed}: "
                      f"{100 * record['summary']['student']['test_accuracy']:.2f}", flush=True)


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * std:.2f}"


def load(cell: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((RECORDS / cell.replace("/", "__")).glob("*.json"))]


def table(cells: list[str]) -> str:
    """The markdown RESULTS.md carries: accuracy per selector and budget, the references, the teacher's cost."""
    lines = []
    for cell in cells:
        records = load(cell)
        if not records:
            continue
        by = {}
        for r in records:
            by.setdefault((r["selector"], r["budget"]), []).append(r)
        full = [r["summary"]["student"]["test_accuracy"] for r in by.get(("full_pool", 1.0), [])]
        labeled_only = [r["summary"]["rounds"][0]["val_accuracy"] for rs in by.values() for r in rs
                        if r["kind"] == "active"]
        active = [r for r in records if r["kind"] == "active"]
        summary = active[0]["summary"] if active else None
        lines += [f"### {cell}", ""]
        if summary:
            rate = [r["summary"] for r in active if r["summary"]["teacher_rows_encoded"] > 0]
            seconds = sum(s["teacher_seconds"] for s in rate)
            rows = sum(s["teacher_rows_encoded"] for s in rate)
            per_row = seconds / rows if rows else float("nan")
            lines.append(f"Pool {summary['pool']:,} rows, {summary['labeled']:,} labeled; teacher test accuracy "
                         f"{100 * summary['teacher']['test_accuracy']:.2f}%, validation error "
                         f"{100 * summary['teacher']['val_error']:.2f}% (sets RAD's adversary). Teacher measured at "
                         f"{per_row:.3f} s/row over the {rows:,} rows the runs encoded "
                         f"({records[0]['machine']['cpu']}, {records[0]['machine']['cores']} cores).")
            lines.append("")
        header = "| selector | " + " | ".join(f"{int(100 * b)}% of the pool" for b in BUDGETS) + " |"
        lines += [header, "|---|" + "---|" * len(BUDGETS)]
        for selector in SELECTORS:
            cells_ = []
            for budget in BUDGETS:
                accs = [r["summary"]["student"]["test_accuracy"] for r in by.get((selector, budget), [])]
                cells_.append(_mean_std(accs) + ("" if len(accs) == len(SEEDS) else f" ({len(accs)} seeds)")
                              if accs else "—")
            lines.append(f"| {selector} | " + " | ".join(cells_) + " |")
        if full:
            lines.append(f"| whole pool (`lelp fit`, 100%) | {_mean_std(full)} | | | |")
        if summary:
            needed = {b: next((r["summary"]["teacher_rows_needed"] for r in active if r["budget"] == b), None)
                      for b in BUDGETS}
            lines.append("| teacher rows needed (labeled + val + test + queries) | "
                         + " | ".join(f"{needed[b]:,}" if needed[b] else "—" for b in BUDGETS) + " |")
            # every training row, val, test
            whole = summary["pool"] + summary["teacher_rows_needed"] - summary["budget"]
            lines.append("| teacher time at the measured rate, s (whole pool: "
                         f"{whole * per_row:,.0f} s for {whole:,} rows) | "
                         + " | ".join(f"{needed[b] * per_row:,.0f}" if needed[b] else "—" for b in BUDGETS) + " |")
        lines += ["", f"Round 0 (labeled rows only) validation accuracy: {_mean_std(labeled_only)}." if labeled_only
                  else "", ""]
    return "\n".join(lines)


def section() -> list[str]:
    """The RESULTS.md section (``benchmarks/report.py`` puts it after the grid): intro, tables, plot."""
    cells = [c for c in CELLS if load(c)]
    if not cells:
        return []
    plot(cells, RECORDS / "active_curves.png")
    return ["## `lelp active`: student accuracy against teacher queries", "",
            "`python -m benchmarks.active.accuracy_vs_queries`; records in `benchmarks/results/active/`. "
            "Test accuracy % (mean ± std over "
            f"seeds {', '.join(map(str, SEEDS))}) after {ROUNDS} rounds at each share of the pool; vanilla KD (τ = 1), "
            "1,000 labeled rows; the whole-pool row is `lelp fit` with the teacher on every pool row.", "",
            table(cells), "![accuracy against teacher queries](results/active/active_curves.png)", ""]


def plot(cells: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4), squeeze=False)
    for ax, cell in zip(axes[0], cells, strict=True):
        records = load(cell)
        for selector in SELECTORS:
            xs, ys, es = [], [], []
            for budget in BUDGETS:
                accs = [r["summary"]["student"]["test_accuracy"] for r in records
                        if r["selector"] == selector and r["budget"] == budget]
                if accs:
                    xs.append(100 * budget)
                    ys.append(100 * statistics.fmean(accs))
                    es.append(100 * (statistics.stdev(accs) if len(accs) > 1 else 0.0))
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=selector)
        full = [r["summary"]["student"]["test_accuracy"] for r in records if r["selector"] == "full_pool"]
        if full:
            ax.axhline(100 * statistics.fmean(full), color="black", linestyle="--", label="whole pool (lelp fit)")
        ax.set_xlabel("teacher queries (% of the pool)")
        ax.set_ylabel("student test accuracy (%)")
        ax.set_title(cell)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--table", action="store_true", help="print the table and write the plot from the records")
    args = parser.parse_args()
    if args.table:
        print(table(args.cells))
        plot(args.cells, RECORDS / "active_curves.png")
        return
    for cell in args.cells:
        run_cell(cell)


if __name__ == "__main__":
    main()
