"""What a finished study leaves in its folder: the leaderboard, ``best.yaml``, plots and the refit on test.

    leaderboard.csv / leaderboard.md   every trial: number, state, method, parameters, validation accuracy, wall time
    best.yaml                          the best trial's whole config: ``lelp fit --config best.yaml`` reproduces it
    optimization_history.png, param_importances.png   Optuna's matplotlib plots
    refit/seed_<s>/                    the best configuration trained with seed s and tested once (its checkpoint,
                                       summary.json); refit.json gathers them (mean ± std)

Files are written whole (:mod:`lelp_lightning.fileio`). Only one process writes a study's report at a time
(``report.lock`` in its folder); a refit seed already in ``refit.json`` is not run again.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import warnings
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from lelp_lightning.fileio import atomic_write_file, atomic_write_json, atomic_write_text, locked
from lelp_lightning.runlayer.fits import refit_seeds, write_config
from lelp_lightning.tune.crossval import BASELINES, cv_text, decide, finalists, fold_values, is_fold

log = logging.getLogger(__name__)


def trial_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """A complete trial's value; a pruned or failed one's last reported value (None if it reported none)."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def is_confirmation(trial) -> bool:
    """A rerun of a search trial with another seed (``confirm_top``): outside the budget and the ranking."""
    return "confirm_of" in trial.user_attrs


def is_extra(trial) -> bool:
    """A run outside the budget and the search's ranking: a confirmation or a cross-validation fold."""
    return is_confirmation(trial) or is_fold(trial)


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` complete search trials with the highest validation accuracy (ties: the earlier trial)."""
    search = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not is_extra(t)]
    return sorted(search, key=lambda t: (-t.value, t.number))[:k]


def confirmed_values(study: optuna.Study) -> dict[int, list[float]]:
    """Search trial number → its value followed by its complete confirmations' values (one per seed offset)."""
    values: dict[int, dict[int, float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_confirmation(t):
            values.setdefault(t.user_attrs["confirm_of"], {}).setdefault(t.user_attrs["confirm_seed"], t.value)
        elif not is_fold(t):
            values.setdefault(t.number, {})[0] = t.value
    return {n: [v[s] for s in sorted(v)] for n, v in values.items() if 0 in v}


def select_best(study: optuna.Study, confirm_top: int) -> tuple[optuna.trial.FrozenTrial, list[float]] | None:
    """The study's answer and its validation values: the best single search trial, or with ``confirm_top`` the one
    of the top trials with the highest mean over its runs (ties: the higher single run, then the earlier trial)."""
    top = top_trials(study, max(confirm_top, 1))
    if not top:
        return None
    values = confirmed_values(study)
    best = min(top, key=lambda t: (-statistics.fmean(values[t.number]), -t.value, t.number))
    return best, values[best.number]


def baseline_margins(study: optuna.Study, best: optuna.trial.FrozenTrial) -> list[dict]:
    """The answer against the best complete search trial of each baseline method (other than its own) on validation:
    the difference, its standard error and whether it is beyond noise (more than two standard errors).

    The standard error treats the two accuracies as independent proportions on the ``val_rows`` validation rows,
    ``sqrt(a(1-a)/n + b(1-b)/n)``: both score the same rows, so a paired test would be tighter, but trials keep no
    per-row predictions. Empty for a study whose trials did not record ``val_rows``."""
    rows = best.user_attrs.get("val_rows")
    if not rows:
        return []
    ranked = top_trials(study, len(study.trials))
    margins = []
    for method in BASELINES:
        baseline = next((t for t in ranked if t.user_attrs.get("method") == method), None)
        if baseline is None or method == best.user_attrs.get("method"):
            continue
        a, b = best.value, baseline.value
        error = math.sqrt(a * (1 - a) / rows + b * (1 - b) / rows)
        margins.append({"method": method, "trial": baseline.number, "val_accuracy": b, "difference": a - b,
                        "standard_error": error, "beyond_noise": abs(a - b) > 2 * error})
    return margins


def margins_text(margins: list[dict], rows: int | None) -> str:
    """One line: the answer's validation margin over each baseline, for the report and the leaderboard."""
    if not margins:
        return ""
    parts = [f"{m['method']} (trial {m['trial']}, {m['val_accuracy']:.4f}): {m['difference']:+.4f} ± "
             f"{m['standard_error']:.4f}, {'beyond noise' if m['beyond_noise'] else 'within noise'}" for m in margins]
    return (f"against the baselines on validation ({rows} rows; ± one standard error, beyond noise past two): "
            + "; ".join(parts))


def cross_validation(study: optuna.Study, options) -> dict | None:
    """The finalists' held-out accuracies on ``cv_folds`` folds and the decision (:func:`~lelp_lightning.tune.crossval
    .decide`); a finalist without all its folds (a fold run failed twice) is left out, and named in ``missing``.
    None without cross-validation or without a finalist."""
    if not options.cv_folds:
        return None
    values, table, missing = fold_values(study, options.cv_folds), [], []
    for trial in finalists(top_trials(study, len(study.trials)), options.cv_top):
        got = values.get(trial.number, {})
        if len(got) < options.cv_folds:
            missing.append(trial.number)
            continue
        table.append({"trial": trial.number, "method": trial.user_attrs["method"], "params": method_params(trial),
                      "val_accuracy": trial.value, "folds": [got[f] for f in range(options.cv_folds)]})
    if missing:
        log.warning("tune: trials %s are left out of the cross-validated decision: some of their fold runs failed "
                    "(rerun the command to run them again)", missing)
    return {"folds": options.cv_folds, "finalists": table, "missing": missing,
            **decide(table, options.cv_rule)} if table else None


def cv_markdown(cv: dict) -> str:
    """The finalists' table: validation, each fold, mean ± std, and which is the best mean and the answer."""
    frame = pd.DataFrame([{"trial": r["trial"], "method": r["method"],
                           "params": json.dumps({k: _short(v) for k, v in r["params"].items()}, sort_keys=True),
                           "val_accuracy": r["val_accuracy"],
                           "folds": " ".join(f"{v:.4f}" for v in r["folds"]),
                           "mean": statistics.fmean(r["folds"]), "std": statistics.stdev(r["folds"]),
                           "note": ", ".join(n for n, t in (("answer", cv["answer"]), ("best mean", cv["best"]))
                                             if t == r["trial"])} for r in cv["finalists"]])
    return f"\nfinalists on {cv['folds']} folds of the labeled training rows (held-out accuracy):\n\n" + markdown(frame)


def method_params(trial: optuna.trial.FrozenTrial) -> dict:
    """The trial's parameters without the method and its prefix (``lelp.beta`` → ``beta``)."""
    method = trial.params.get("method")
    return {k.removeprefix(f"{method}."): v for k, v in trial.params.items() if k != "method"}


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """One row per trial that ran (surplus trials, never run, are left out), best validation accuracy first;
    a pruned trial shows its last reported value."""
    rows, confirmed = [], confirmed_values(study)
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus") or t.state == TrialState.WAITING:
            continue
        rows.append({"trial": t.number, "state": t.state.name.lower(), "method": t.params.get("method"),
                     "params": json.dumps({k: _short(v) for k, v in method_params(t).items()}, sort_keys=True),
                     "val_accuracy": trial_value(t), "epochs": t.user_attrs.get("epochs"),
                     "wall_s": t.user_attrs.get("wall_s"),
                     "note": t.user_attrs.get("error", "") or _confirm_note(t, confirmed.get(t.number))})
    frame = pd.DataFrame(rows, columns=["trial", "state", "method", "params", "val_accuracy", "epochs", "wall_s",
                                        "note"]).astype({"epochs": "Int64"})
    order = {"complete": 0, "pruned": 1, "fail": 2, "running": 3}
    frame["_order"] = frame["state"].map(order).fillna(4)
    return frame.sort_values(["_order", "val_accuracy", "trial"], ascending=[True, False, True],
                             na_position="last").drop(columns="_order").reset_index(drop=True)


def seed_mean(values: list[float] | None) -> str:
    """"mean over N seeds X" for a confirmed trial's validation values; "" for a single run."""
    return f"mean over {len(values)} seeds {statistics.fmean(values):.4f}" if values and len(values) > 1 else ""


def _confirm_note(trial, values: list[float] | None) -> str:
    if is_fold(trial):
        attrs = trial.user_attrs
        return f"fold {attrs['cv_fold'] + 1} of {attrs['cv_folds']} of trial {attrs['cv_of']}"
    if is_confirmation(trial):
        return f"confirms trial {trial.user_attrs['confirm_of']} (seed +{trial.user_attrs['confirm_seed']})"
    return seed_mean(values)


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


def markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    cell = lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else \
        (f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|"))  # noqa: E731
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def best_config(base, trial: optuna.trial.FrozenTrial, values: list[float], folder: Path) -> Path:
    """``best.yaml``: the base config with the best trial's method and parameters, as the CLI resolves it; its runs
    are named after the study (``runs/<study>/version_N``)."""
    mean = seed_mean(values)
    mean = f", {mean}" if mean else ""
    return write_config(folder / "best.yaml",
                        [*base.args, *trial.user_attrs["overrides"],
                         "--trainer.default_root_dir", str(folder / "best")],
                        f"lelp tune: the study's best, trial {trial.number} ({trial.user_attrs['method']}, validation "
                        f"{trial.value:.4f}{mean}); run it with: lelp fit --config best.yaml", name=folder.name)


def plots(study: optuna.Study, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    for name, draw in (("optimization_history", ovm.plot_optimization_history),
                       ("param_importances", ovm.plot_param_importances)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances need two complete trials
                log.info("tune: no %s plot (%s)", name.replace("_", " "), err)
                continue
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        atomic_write_file(folder / f"{name}.png", lambda tmp, f=figure: f.savefig(tmp, dpi=100, format="png"))
        plt.close(figure)
        written.append(f"{name}.png")
    return written


def refit(best: Path, trial: optuna.trial.FrozenTrial, values: list[float], seeds: int, folder: Path) -> dict:
    """The best configuration trained with ``seeds`` seeds, each tested once; seeds already done are kept."""
    path = folder / "refit.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    if done.get("trial") != trial.number:
        done = {}
    runs = {r["seed"]: r for r in done.get("runs", [])}

    def keep(seed: int, summary: dict) -> None:
        runs[seed] = {"seed": seed, "test_accuracy": summary["student"]["test_accuracy"],
                      "test_macro_f1": summary["student"]["test_macro_f1"], "fit_seconds": summary["fit_seconds"],
                      "teacher_test_accuracy": summary["teacher"]["test_accuracy"],
                      "run_dir": str(folder / "refit" / f"seed_{seed}")}
        atomic_write_json(path, _refit_record(trial, values, runs))

    refit_seeds(best, seeds, folder, "refit", runs, keep)
    return _refit_record(trial, values, runs)


def _refit_record(trial, values: list[float], runs: dict) -> dict:
    accs = [runs[s]["test_accuracy"] for s in sorted(runs)]
    teacher = runs[min(runs)]["teacher_test_accuracy"] if runs else None
    return {"trial": trial.number, "method": trial.user_attrs["method"], "val_accuracy": trial.value,
            "val_accuracy_runs": values,
            "params": dict(trial.params.items()), "runs": [runs[s] for s in sorted(runs)],
            "test_accuracy_mean": statistics.fmean(accs) if accs else None,
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
            "teacher_test_accuracy": teacher}


def write_report(study: optuna.Study, base, options, folder: Path) -> dict:
    """Leaderboard, best.yaml, plots, then the refit; returns what was written and the refit's figures."""
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / "report.lock"):
        frame = leaderboard(study)
        atomic_write_file(folder / "leaderboard.csv", lambda tmp: frame.to_csv(tmp, index=False))
        chosen = select_best(study, options.confirm_top)
        if chosen is None:
            atomic_write_text(folder / "leaderboard.md", markdown(frame))
            log.warning("tune: no trial completed (every one was pruned or failed): no best configuration; see %s",
                        folder / "leaderboard.md")
            return {"best_trial": None, "written": ["leaderboard.csv", "leaderboard.md"], "refit": None}
        best, values = chosen
        cv = cross_validation(study, options)
        if cv is None:
            margins = baseline_margins(study, best)
            against = margins_text(margins, best.user_attrs.get("val_rows"))
        else:  # the answer is the cross-validated one; its margins are paired over the folds
            best = next(t for t in study.get_trials(deepcopy=False) if t.number == cv["answer"])
            values = confirmed_values(study)[best.number]
            margins, against = cv["margins"], cv_text(cv, cv["folds"], base.labeled_count)
        atomic_write_text(folder / "leaderboard.md", markdown(frame) + (cv_markdown(cv) if cv else "")
                          + (f"\n{against}\n" if against else ""))
        best_yaml = best_config(base, best, values, folder)
        written = ["leaderboard.csv", "leaderboard.md", "best.yaml", *plots(study, folder)]
        result = refit(best_yaml, best, values, options.seeds, folder) if options.seeds else None
    report = {"best_trial": best.number, "best_method": best.user_attrs["method"], "best_val_accuracy": best.value,
              "best_val_accuracy_runs": values,
              "best_params": {k: v for k, v in best.params.items() if k != "method"}, "written": written,
              "baselines": margins, "against_baselines": against, "cv": cv, "refit": result}
    print(format_report(report, frame, folder))
    return report


def _parenthesised(text: str) -> str:
    return f" ({text})" if text else ""


def format_report(report: dict, frame: pd.DataFrame, folder: Path) -> str:
    lines = ["", f"leaderboard (top 10 of {len(frame)}; all in {folder / 'leaderboard.md'}):",
             *markdown(frame.head(10)).rstrip().splitlines(),
             f"best: trial {report['best_trial']}, {report['best_method']} {json.dumps(report['best_params'])}, "
             f"validation {report['best_val_accuracy']:.4f}"
             f"{_parenthesised(seed_mean(report['best_val_accuracy_runs']))}; "
             f"config {folder / 'best.yaml'}",
             *([cv_markdown(report["cv"]).strip()] if report["cv"] else []),
             *([report["against_baselines"]] if report["against_baselines"] else [])]
    refit = report["refit"]
    if refit and refit["runs"]:
        lines.append(f"refit on {len(refit['runs'])} seeds, test accuracy {100 * refit['test_accuracy_mean']:.2f} ± "
                     f"{100 * refit['test_accuracy_std']:.2f}% (teacher {100 * refit['teacher_test_accuracy']:.2f}%); "
                     f"{folder / 'refit.json'}")
    return "\n".join(lines)

