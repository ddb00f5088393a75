"""`lelp tune` on the accuracy grid's cells, against the grid's own results.

    .venv/bin/python -m benchmarks.tune.tune_vs_grid --cells 20ng/minilm/bag_sparse/sup     # one cell (resumable)
    .venv/bin/python -m benchmarks.tune.tune_vs_grid --cells 20ng/minilm/bag_sparse/sup --confirm_top 3   # the best 3
                                                                # trials rerun with 2 more seeds before choosing
    .venv/bin/python -m benchmarks.tune.tune_vs_grid --cells 20ng/minilm/bag_sparse/sup --space loco --cv_folds 5
                                # the space derived from the other cells' grid records, the finalists cross-validated
    .venv/bin/python -m benchmarks.tune.tune_vs_grid --table                                # the table from the records

Every cell gets the same budget (``--trials``, default 40) over the default search space without the oracle (a
user's task has no true subclasses), and the best configuration refit on 3 seeds and tested once. The record
(``benchmarks/results/tune/<cell>.json``, written once, never rewritten) holds the refit's test accuracy per seed,
the study's run-seconds (the sum of its trials' wall times) and, from the grid's records of the same cell, KD's,
the student alone's and the best method's test accuracy (mean ± std over their seeds) and the run-seconds of the
grid's selection phase for that cell. With ``--confirm_top K`` (``--tune.confirm_top``) the record is
``<cell>__confirm<K>x<seeds>.json`` and its run-seconds include the confirmation runs. ``--table`` prints the
markdown table RESULTS.md carries.

With ``--space loco`` the study searches the space :mod:`benchmarks.tune.space_from_grid` derives from the grid
records of every *other* cell (leave-one-cell-out: a space tuned on the cell it is scored on proves nothing), and
with ``--cv_folds k`` its answer is decided on k folds of the training rows (``--tune.cv_folds``). Such a record
(``<cell>__loco__cv<k>.json``) holds three answers of the same study, each refit on the same seeds and tested once:
the best validation trial (the rule without cross-validation), the best cross-validated mean (``cv_rule: best``)
and the one-standard-error rule's; and the run-seconds of the search and of the fold runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import time

from benchmarks import provenance
from benchmarks.accuracy import spec
from benchmarks.accuracy.selection import choices
from benchmarks.accuracy.tables import verdict

RECORDS = spec.REPO / "benchmarks" / "results" / "tune"
TUNE_ROOT = spec.REPO / "runs" / "tune-bench"  # git-ignored: the studies, their trials and refits
TUNE_CELLS = spec.TUNE_CELLS


def _mean_std(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def grid_figures(cell: str) -> dict:
    """KD, the student alone and the best non-oracle method of ``cell`` (test accuracy over their final seeds), and
    the run-seconds of the grid's selection phase there."""
    finals: dict[str, list[float]] = {}
    select_s = 0.0
    for record in spec.load_records():
        if record["cell"] != cell:
            continue
        if record["phase"] == "select":
            select_s += record["wall_s"]
        elif record["phase"] == "final" and record["method"] != "oracle":
            finals.setdefault(record["method"], []).append(record["metrics"]["test_accuracy"])
    best = max(finals, key=lambda m: statistics.fmean(finals[m])) if finals else None
    return {"kd": _mean_std(finals["kd"]) if "kd" in finals else None,
            "ce": _mean_std(finals["ce"]) if "ce" in finals else None,
            "best_method": best, "best": _mean_std(finals[best]) if best else None,
            "grid_select_run_s": round(select_s, 1)}


def study_name(name: str, confirm_top: int = 0, confirm_seeds: int = 2, space: str = "default",
               cv_folds: int = 0) -> str:
    """The study's (and its record's) name: the cell, and what differs from the default study."""
    return (name.replace("/", "__") + (f"__confirm{confirm_top}x{confirm_seeds}" if confirm_top else "")
            + ("__loco" if space == "loco" else "") + (f"__cv{cv_folds}" if cv_folds else ""))


def loco_space(name: str) -> dict:
    """The search space derived from the grid records of every cell but ``name``, for ``name``'s student."""
    from benchmarks.tune import space_from_grid

    others = [c for c in TUNE_CELLS if c != name]
    return space_from_grid.derive_space(space_from_grid.summaries(spec.load_records(), others), leave_out=name,
                                        student=spec.CELLS[name].student)


def run_cell(name: str, trials: int, seeds: int, confirm_top: int = 0, confirm_seeds: int = 2,
             space: str = "default", cv_folds: int = 0, cv_top: int = 3) -> dict:
    study = study_name(name, confirm_top, confirm_seeds, space, cv_folds)
    path = RECORDS / f"{study}.json"
    if path.is_file():
        return json.loads(path.read_text())
    import optuna
    import yaml

    from lelp_lightning.tune.study import parse_options, run_study

    cell = spec.CELLS[name]
    # the cell's run with the student's base learning rate (lr_factor multiplies it) and a method to replace
    args = [*cell.args(), *spec.METHODS["ce"].build({}, 0), "--model.lr", str(spec.STUDENTS[cell.student].lr),
            "--trainer.default_root_dir", str(TUNE_ROOT / "runs")]
    tune = ["--tune.n_trials", str(trials), "--tune.seeds", str(seeds), "--tune.root", str(TUNE_ROOT),
            "--tune.study_name", study, "--tune.confirm_top", str(confirm_top), "--tune.confirm_seeds",
            str(confirm_seeds), "--tune.cv_folds", str(cv_folds), "--tune.cv_top", str(cv_top)]
    derived = None
    if space == "loco":
        derived = loco_space(name)
        space_file = TUNE_ROOT / study / "space.yaml"
        space_file.parent.mkdir(parents=True, exist_ok=True)
        if not space_file.is_file():  # a resumed study keeps the space it began with
            space_file.write_text(yaml.safe_dump(derived, sort_keys=False))
        tune += ["--tune.space", str(space_file)]
    else:
        tune += ["--tune.space", "full", "--tune.exclude", "[oracle]"]
    start = time.perf_counter()
    report = run_study(args, parse_options(tune))
    if not report["complete"]:
        raise SystemExit(f"{name}: the study is not complete; rerun to finish it.")
    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{TUNE_ROOT / study / 'study.db'}")
    ran = [t for t in loaded.trials if not t.user_attrs.get("surplus")]
    # the finalists' fold runs (a study resumed after a change of the finalist rule keeps its other fold runs, which
    # a fresh study would not pay for)
    finalist_trials = {f["trial"] for f in (report.get("cv") or {}).get("finalists", [])}
    folds = [t for t in ran if t.user_attrs.get("cv_of") in finalist_trials]
    ran = [t for t in ran if "cv_of" not in t.user_attrs or t in folds]
    refit = report["refit"]
    git = provenance.git_state("lelp_lightning", "benchmarks/tune")
    record = {
        "cell": name, "trials": trials, "seeds": seeds,
        "space": "default without the oracle" if space == "default" else "leave-one-cell-out",
        "derived_space": derived,
        "confirm": [confirm_top, confirm_seeds] if confirm_top else None,
        "cv": _cv_summary(report["cv"], cv_top) if cv_folds else None,
        "answers": _answers(loaded, report, args, tune, seeds) if cv_folds else None,
        "best_method": report["best_method"], "best_params": report["best_params"],
        "best_val_accuracy": report["best_val_accuracy"], "best_val_accuracy_runs": report["best_val_accuracy_runs"],
        "tuned_test_accuracy": [r["test_accuracy"] for r in refit["runs"]],
        "tuned": [refit["test_accuracy_mean"], refit["test_accuracy_std"]],
        "study_run_s": round(sum(t.user_attrs.get("wall_s", 0.0) for t in ran if t not in folds), 1),
        "cv_run_s": round(sum(t.user_attrs.get("wall_s", 0.0) for t in folds), 1),
        "refit_run_s": round(sum(r["fit_seconds"] for r in refit["runs"]), 1),
        "states": {s: sum(t.state.name.lower() == s for t in ran) for s in ("complete", "pruned", "fail")},
        "methods_tried": sorted({t.params.get("method") for t in ran}),
        "wall_s": round(time.perf_counter() - start, 1),
        "grid": grid_figures(name),
        "git_sha": git[0], "git_dirty": git[1],
        "config": args + tune,
        "versions": provenance.versions("torch", "lightning", "optuna", "numpy", "scikit-learn"),
        "machine": provenance.machine(load_avg=[round(v, 2) for v in os.getloadavg()]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return record


def _cv_summary(cv: dict, top: int) -> dict:
    """What the record keeps of the cross-validated decision: the finalists' fold accuracies and both rules' picks."""
    return {"folds": cv["folds"], "top": top, "finalists": cv["finalists"], "best_mean": cv["best"],
            "one_se": cv["answer"] if cv["rule"] == "one_se" else None, "margins": cv["margins"],
            "teacher": cv["teacher"]}


def _answers(study, report: dict, args: list[str], tune: list[str], seeds: int) -> dict:
    """The study's answer under each rule — the best validation trial, the best cross-validated mean, the one-SE
    rule — each refit on the same seeds and tested once (an answer two rules share is refit once)."""
    from lelp_lightning.tune.crossval import decide
    from lelp_lightning.tune.report import best_config, refit, select_best
    from lelp_lightning.tune.study import Base, parse_options

    cv = report["cv"]
    chosen = {"validation": select_best(study, 0)[0].number, "cv_best": cv["best"],
              "cv_one_se": decide(cv["finalists"], "one_se")["answer"]}
    folder = TUNE_ROOT / study.study_name
    base, refits = None, {report["best_trial"]: report["refit"]}
    for number in dict.fromkeys(chosen.values()):
        if number not in refits:
            base = base or Base(args, parse_options(tune))
            trial = study.trials[number]
            answer = folder / "answers" / f"trial_{number:04d}"
            answer.mkdir(parents=True, exist_ok=True)
            refits[number] = refit(best_config(base, trial, [trial.value], answer), trial, [trial.value], seeds,
                                   answer)
    return {rule: {"trial": n, "method": study.trials[n].user_attrs["method"],
                   "test_accuracy": [r["test_accuracy"] for r in refits[n]["runs"]],
                   "tuned": [refits[n]["test_accuracy_mean"], refits[n]["test_accuracy_std"]]}
            for rule, n in chosen.items()}


def grid_validation_pick(cell: str, records: list[dict]) -> tuple[str, list[float]] | None:
    """What choosing among the grid's methods by validation would give: each non-oracle method's selected
    configuration, scored by its seed-0 validation accuracy (ties: the first method in grid order); the winner's
    test accuracy over its final seeds. None while the cell has no final runs. ``records``: the grid's."""
    records = [r for r in records if r["cell"] == cell]
    by_key = {r["key"]: r for r in records}
    chosen, _ = choices(spec.CELLS[cell], by_key)
    scored = []
    for method, hp in chosen.items():
        if method == "oracle":
            continue
        seed0 = [by_key.get(spec.make_run(spec.CELLS[cell], method, hp, 0, test, phase).key)
                 for test, phase in ((False, "select"), (True, "final"))]
        seed0 = next((r for r in seed0 if r is not None), None)
        finals = [r["metrics"]["test_accuracy"] for r in records if r["phase"] == "final" and r["method"] == method
                  and r["hp"] == hp]
        if seed0 is not None and finals:
            scored.append((seed0["metrics"]["val_accuracy"], method, finals))
    if not scored:
        return None
    best = max(scored, key=lambda s: s[0])  # max keeps the first of equal scores
    return best[1], _mean_std(best[2])


def table() -> str:
    pct = lambda ms: f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}" if ms else "–"  # noqa: E731
    lines = ["| cell | tuned (method) | KD | student alone | the grid's validation pick (method) | best of the grid by "
             "test (method) | tuned − KD | study / grid selection run-s |", "|---|---|---|---|---|---|---|---|"]
    grid_records = spec.load_records()
    for path in sorted(RECORDS.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("cv"):  # in cv_table
            continue
        g = r["grid"]
        delta = f"{100 * (r['tuned'][0] - g['kd'][0]):+.2f}" if g["kd"] else "–"
        confirm = r.get("confirm")
        label = r["cell"] + (f" (best {confirm[0]} rerun with {confirm[1]} more seeds)" if confirm else "")
        pick = grid_validation_pick(r["cell"], grid_records)
        picked = f"{pct(pick[1])} ({pick[0]})" if pick else "–"
        lines.append(f"| {label} | {pct(r['tuned'])} ({r['best_method']}) | {pct(g['kd'])} | {pct(g['ce'])} | "
                     f"{picked} | {pct(g['best'])} ({g['best_method']}) | {delta} | {r['study_run_s']:.0f} / "
                     f"{g['grid_select_run_s']:.0f} |")
    return "\n".join(lines)


def _versus(accs: list[float], baseline: list[float] | None, n: int = 3) -> tuple[float, float] | None:
    """(answer − baseline in points, its standard error) from the answer's per-seed accuracies and the baseline's
    mean and std over ``n`` seeds; None without a baseline."""
    if not baseline:
        return None
    mine = _mean_std(accs)
    return 100 * (mine[0] - baseline[0]), 100 * math.sqrt(mine[1] ** 2 / len(accs) + baseline[1] ** 2 / n)


def grid_beats_kd(cell: str, records: list[dict]) -> bool:
    """Whether some non-oracle grid method's final runs beat KD's beyond noise (Δ > 2 SE) on ``cell``."""
    finals: dict[str, list[float]] = {}
    for r in records:
        if r["cell"] == cell and r["phase"] == "final" and r["method"] != "oracle":
            finals.setdefault(r["method"], []).append(r["metrics"]["test_accuracy"])
    if "kd" not in finals:
        return False
    kd = _mean_std(finals["kd"])
    return any(d > 2 * se for m, v in finals.items() if m != "kd" and len(v) > 1
               for d, se in [_versus(v, kd, len(finals["kd"]))])


RULES = (("validation", "best validation trial"), ("cv_best", "best cross-validated mean"),
         ("cv_one_se", "one-SE rule"))


def cv_rows() -> list[dict]:
    return [r for r in (json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))) if r.get("cv")]


def _today(cell: str) -> dict | None:
    """The cell's study of the table above: the full space, the best validation trial (no cross-validation)."""
    path = RECORDS / f"{cell.replace('/', '__')}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _better_baseline(grid: dict) -> list[float]:
    return max((b for b in (grid["kd"], grid["ce"]) if b), key=lambda b: b[0])


def cv_tally(rows: list[dict], grid_records: list[dict]) -> dict:
    """Against the issue's goals, per answer (today's study and the three rules of the new one): on how many cells
    it is below max(KD, the student alone) beyond noise, and above KD beyond noise where some grid method is; and
    what a study with its folds costs, against its own search and against today's study."""
    answers = {"today": "today's study", **dict(RULES)}
    tally = {a: {"below": 0, "above_kd": 0, "cells": 0} for a in answers}
    beatable, own, today_ratio, search_today = 0, [], [], []
    for r in rows:
        g, beats, today = r["grid"], grid_beats_kd(r["cell"], grid_records), _today(r["cell"])
        beatable += beats
        accs = {rule: r["answers"][rule]["test_accuracy"] for rule, _ in RULES}
        if today:
            accs["today"] = today["tuned_test_accuracy"]
        for answer, values in accs.items():
            d, se = _versus(values, _better_baseline(g))
            tally[answer]["below"] += d < -2 * se
            d, se = _versus(values, g["kd"])
            tally[answer]["above_kd"] += beats and d > 2 * se
            tally[answer]["cells"] += 1
        total = r["study_run_s"] + r["cv_run_s"]
        own.append(total / r["study_run_s"])
        if today:
            today_ratio.append(total / today["study_run_s"])
            search_today.append(r["study_run_s"] / today["study_run_s"])
    return {"answers": answers, "tally": tally, "beatable": beatable, "cells": len(rows), "own": own,
            "today": today_ratio, "search_today": search_today}


def cv_table() -> list[str]:
    """The leave-one-cell-out, cross-validated studies: each rule's answer beside today's study and the grid, and
    how often each answer meets the goals."""
    rows = cv_rows()
    if not rows:
        return []
    pct = lambda ms: f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}" if ms else "–"  # noqa: E731
    grid_records = spec.load_records()
    lines = ["| cell | today: full space, best validation trial | " + " | ".join(label for _, label in RULES)
             + " | KD | student alone | grid's validation pick | one-SE − max(KD, alone) | one-SE − KD | run-s: search"
             " + folds (total / search) | today's study run-s |", "|---" * 13 + "|"]
    for r in rows:
        g, answers, today = r["grid"], r["answers"], _today(r["cell"])
        one_se = answers["cv_one_se"]["test_accuracy"]
        versus = [_versus(one_se, _better_baseline(g)), _versus(one_se, g["kd"])]
        pick = grid_validation_pick(r["cell"], grid_records)
        total = r["study_run_s"] + r["cv_run_s"]
        lines.append(f"| {r['cell']} | " + (f"{pct(today['tuned'])} ({today['best_method']})" if today else "–")
                     + "".join(f" | {pct(answers[rule]['tuned'])} ({answers[rule]['method']})" for rule, _ in RULES)
                     + f" | {pct(g['kd'])} | {pct(g['ce'])} | " + (f"{pct(pick[1])} ({pick[0]})" if pick else "–")
                     + "".join(f" | {d:+.2f} ± {se:.2f} ({verdict(d, se)})" for d, se in versus)
                     + f" | {r['study_run_s']:.0f} + {r['cv_run_s']:.0f} ({total / r['study_run_s']:.2f}×) | "
                     + (f"{today['study_run_s']:.0f}" if today else "–") + " |")
    return [*lines, "", summary()]


def summary() -> str:
    """The tally in words (RESULTS.md and the README's ``results:tune`` block)."""
    rows = cv_rows()
    if not rows:
        return "No leave-one-cell-out, cross-validated study has been measured yet."
    t = cv_tally(rows, spec.load_records())
    said = "; ".join(f"{label}: below max(KD, the student alone) beyond noise on {t['tally'][a]['below']} of "
                     f"{t['tally'][a]['cells']}, above KD beyond noise on {t['tally'][a]['above_kd']}"
                     for a, label in t["answers"].items())
    today = (f"; against today's study, measured in another session on other machines and threads, it is "
             f"{min(t['today']):.2f}–{max(t['today']):.2f}× (its search alone {min(t['search_today']):.2f}–"
             f"{max(t['search_today']):.2f}×)" if t["today"] else "")
    return (f"`lelp tune` with the learned space (leave-one-cell-out) and the answer decided on 5 folds, on "
            f"{t['cells']} of the grid's {len(TUNE_CELLS)} cells (some grid method beats KD beyond noise on "
            f"{t['beatable']} of them), refit on 3 seeds and tested once — {said}. A study with its folds costs "
            f"{min(t['own']):.2f}–{max(t['own']):.2f}× its own search's run-seconds{today}.")


def section() -> list[str]:
    """The RESULTS.md section (``benchmarks/report.py`` puts it after the grid): intro and table."""
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    if not records:
        return []
    trials = sorted({r["trials"] for r in records})
    cpus = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in records})
    return [f"## `lelp tune` against the grid ({'/'.join(map(str, trials))} trials, default space without the oracle, "
            "refit on 3 seeds)", "",
            "`python -m benchmarks.tune.tune_vs_grid --cells <cell>`; records in `benchmarks/results/tune/`. "
            "Run-seconds: the sum of the study's trial wall times / of the grid's selection runs for the cell. "
            "*The grid's validation pick*: "
            "each grid method's selected configuration scored by its seed-0 validation accuracy, the winner's test "
            "accuracy: what validation-only selection among the grid's methods gives, the fair reference for a study "
            "that also selects on validation. *Best of the grid by test* picks by the test split itself, an upper "
            "bound no validation-only selection can claim. "
            f"{len({r['cell'] for r in records})} of {len(TUNE_CELLS)} cells measured "
            f"({'; '.join(cpus)}).", "", table(), "", *_cv_section()]


def _cv_section() -> list[str]:
    table_lines = cv_table()
    if not table_lines:
        return []
    return ["### The default space learned leave-one-cell-out, the answer decided on 5 folds", "",
            "`python -m benchmarks.tune.tune_vs_grid --cells <cell> --space loco --cv_folds 5`: 40 trials over the "
            "space `benchmarks/tune/space_from_grid.py` derives from the grid records of the *other* cells, then the "
            "best trial of each of the 3 best methods, KD and the student alone on 5 folds of the training rows; three "
            "answers of the one study, each refit on 3 seeds and tested once. *Today*: the 40-trial study of the "
            "table above (full space, best validation trial). ± of a difference: its standard error over the seeds; "
            "a win or loss needs |Δ| > 2 SE. Run-seconds: the trials' wall times (one thread per study, two studies "
            "at a time).", "", *table_lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="*", default=[])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--confirm_top", type=int, default=0, help="lelp tune's --tune.confirm_top")
    parser.add_argument("--confirm_seeds", type=int, default=2, help="lelp tune's --tune.confirm_seeds")
    parser.add_argument("--space", choices=("default", "loco"), default="default",
                        help="the default space without the oracle, or the one derived from the other cells' records")
    parser.add_argument("--cv_folds", type=int, default=0, help="lelp tune's --tune.cv_folds (0: no cross-validation)")
    parser.add_argument("--cv_top", type=int, default=3, help="lelp tune's --tune.cv_top")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    for name in args.cells:
        if name not in TUNE_CELLS:
            raise SystemExit(f"unknown cell {name!r}; cells: {', '.join(TUNE_CELLS)}")
        record = run_cell(name, args.trials, args.seeds, args.confirm_top, args.confirm_seeds, args.space,
                          args.cv_folds, args.cv_top)
        print(f"{name}: tuned {record['tuned']} ({record['best_method']}), KD {record['grid']['kd']}")
    if args.table:
        print(table())


if __name__ == "__main__":
    main()
