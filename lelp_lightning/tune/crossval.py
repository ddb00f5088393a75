"""The study's final decision on folds of the training rows: its finalists compared paired, the one-SE rule.

After the search (ranked on the validation split), the best trial of each of the ``cv_top`` best methods and the best
trial of each baseline (vanilla KD, the student alone) are each trained on k − 1 folds of the labeled training
rows and scored on the held-out fold (``data.folds``), with the same folds and the same seed for every finalist,
so the differences between two finalists are paired fold by fold. Fold runs are trials of the study (user
attributes ``cv_of``, ``cv_fold``, ``cv_folds``): resumable, shared by workers, in the leaderboard.

The answer is the finalist with the best mean held-out accuracy (``cv_rule: best``), or with ``one_se`` the
baseline within one paired standard error of it, if there is one (of two, the one with the higher mean): the
one-standard-error rule of model selection, which prefers the simpler model when the data cannot tell them apart.
"""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.trial import TrialState

CV_RULES = ("one_se", "best")
BASELINES = ("kd", "ce")  # vanilla KD and the student trained on its labels alone


def is_fold(trial) -> bool:
    """A finalist's run on one cross-validation fold: outside the budget and the search's ranking."""
    return "cv_of" in trial.user_attrs


def finalists(ranked: list[optuna.trial.FrozenTrial], top: int) -> list[optuna.trial.FrozenTrial]:
    """The best trial of each of the ``top`` best methods of ``ranked`` (search trials, best first), then the best
    trial of each baseline method not among them. One trial per method: the sampler spends many trials on the method
    it favours, and its top few are often one configuration with a nudged learning rate, whose folds would score
    alike (tweets3: three GMM finalists within 0.001 on every fold); the folds are there to choose between methods."""
    chosen, seen = [], set()
    for trial in ranked:
        method = trial.user_attrs.get("method")
        if len(chosen) < top and method not in seen:
            chosen.append(trial)
            seen.add(method)
    for method in BASELINES:
        if not any(t.user_attrs.get("method") == method for t in chosen):
            chosen += [t for t in ranked if t.user_attrs.get("method") == method][:1]
    return chosen


def fold_values(study: optuna.Study, folds: int) -> dict[int, dict[int, float]]:
    """Finalist trial number → {fold: held-out accuracy} of its complete fold runs with ``folds`` folds."""
    values: dict[int, dict[int, float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_fold(t) and t.user_attrs.get("cv_folds") == folds:
            values.setdefault(t.user_attrs["cv_of"], {}).setdefault(t.user_attrs["cv_fold"], t.value)
    return values


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """The mean of the per-fold differences a − b and its standard error (their sample deviation / √k)."""
    differences = [x - y for x, y in zip(a, b, strict=True)]
    error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else math.nan
    return statistics.fmean(differences), error


def decide(rows: list[dict], rule: str) -> dict:
    """The answer among ``rows`` (finalists with ``trial``, ``method``, ``val_accuracy`` and equally long ``folds``
    lists, in the order they were chosen) under ``rule``; with the paired margins of the answer over each baseline
    and the reading of whether the teacher helps (the best finalist that learns from it against the student alone,
    beyond noise past two standard errors)."""
    mean = {r["trial"]: statistics.fmean(r["folds"]) for r in rows}
    best = max(rows, key=lambda r: (mean[r["trial"]], r["val_accuracy"], -r["trial"]))
    baselines = {m: next((r for r in rows if r["method"] == m), None) for m in BASELINES}
    answer = best
    if rule == "one_se" and best["method"] not in BASELINES:
        close = [b for b in baselines.values()
                 if b is not None and (m := _margin(best, b))["difference"] <= m["standard_error"]]
        if close:
            answer = max(close, key=lambda b: mean[b["trial"]])  # max keeps the first (KD) of equal means
    margins = [_margin(answer, b) for m, b in baselines.items() if b is not None and m != answer["method"]]
    return {"rule": rule, "best": best["trial"], "answer": answer["trial"], "answer_method": answer["method"],
            "mean": mean, "margins": margins, "teacher": _teacher_helps(rows, baselines["ce"], mean)}


def _margin(a: dict, b: dict) -> dict:
    difference, error = paired(a["folds"], b["folds"])
    return {"method": b["method"], "trial": b["trial"], "difference": difference, "standard_error": error,
            "beyond_noise": abs(difference) > 2 * error}


def _teacher_helps(rows: list[dict], alone: dict | None, mean: dict) -> str:
    taught = [r for r in rows if r["method"] != "ce"]
    if alone is None or not taught:
        return ""
    best = max(taught, key=lambda r: (mean[r["trial"]], -r["trial"]))
    m = _margin(best, alone)
    said = f"{best['method']} (trial {best['trial']}) − the student alone: {m['difference']:+.4f} ± " \
           f"{m['standard_error']:.4f}"
    if m["beyond_noise"] and m["difference"] > 0:
        return f"the teacher helps this task: {said}, beyond noise"
    if m["beyond_noise"]:
        return f"the teacher does not help this task: the student alone is better than every finalist that learns " \
               f"from it ({said}, beyond noise)"
    return f"the teacher may not help this task: no finalist that learns from it beats the student alone beyond " \
           f"noise ({said})"


def cv_text(decision: dict, folds: int, rows: int | None) -> str:
    """The decision in words: the rule's answer, its paired margins over the baselines, whether the teacher helps."""
    on = f"{folds} folds" + (f" of the {rows} labeled training rows" if rows else "")
    lines = [f"cross-validated on {on}: the best mean is trial {decision['best']} "
             f"({100 * decision['mean'][decision['best']]:.2f}%); answer ({decision['rule']} rule): trial "
             f"{decision['answer']}, {decision['answer_method']}"]
    if decision["margins"]:
        lines.append("against the baselines, paired over the folds (± one standard error, beyond noise past two): "
                     + "; ".join(f"{m['method']} (trial {m['trial']}): {m['difference']:+.4f} ± "
                                 f"{m['standard_error']:.4f}, {'beyond noise' if m['beyond_noise'] else 'within noise'}"
                                 for m in decision["margins"]))
    if decision["teacher"]:
        lines.append(decision["teacher"])
    return "\n".join(lines)
