"""The cross-validated final decision: paired fold differences, the one-standard-error rule, resumable folds."""

import json
import statistics

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import run_main
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats

from lelp_lightning.tune.crossval import decide, finalists, paired

from .test_study import FINISHED, last_val_accuracy, load, tune_args

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _row(trial, method, folds, val=0.8):
    return {"trial": trial, "method": method, "val_accuracy": val, "folds": folds}


def test_the_paired_difference_and_its_error_are_the_paired_t_test_s():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.uniform(0.7, 0.9, 5), rng.uniform(0.7, 0.9, 5)
        mean, error = paired(a.tolist(), b.tolist())
        assert mean == pytest.approx(np.mean(a - b))
        assert mean / error == pytest.approx(stats.ttest_rel(a, b).statistic)  # t = mean difference / its error


def test_the_one_standard_error_rule_against_a_hand_computation():
    lelp = _row(2, "lelp", [0.86, 0.88, 0.85, 0.87, 0.89])
    kd = _row(1, "kd", [0.85, 0.88, 0.84, 0.86, 0.88])  # differences 0.01 0 0.01 0.01 0.01: mean 0.008
    ce = _row(0, "ce", [0.80, 0.82, 0.79, 0.80, 0.81])
    # by hand: sd of (.01, 0, .01, .01, .01) = sqrt(((.002)^2 * 4 + (.008)^2) / 4) = 0.004472; / sqrt(5) = 0.002
    assert paired(lelp["folds"], kd["folds"]) == pytest.approx((0.008, 0.002))
    rows = [ce, kd, lelp]
    assert decide(rows, "best")["answer"] == 2  # the best mean
    one_se = decide(rows, "one_se")
    assert one_se["best"] == 2 and one_se["answer"] == 2  # KD is 4 standard errors below: not within one
    kd_close = _row(1, "kd", [0.86, 0.87, 0.85, 0.88, 0.88])  # differences 0 .01 0 -.01 .01: mean .002, se .0037
    one_se = decide([ce, kd_close, lelp], "one_se")
    assert one_se["best"] == 2 and one_se["answer"] == 1 and one_se["answer_method"] == "kd"
    margin = {m["method"]: m for m in one_se["margins"]}
    assert set(margin) == {"ce"}  # the answer is KD: compared with the other baseline only
    expected = np.mean(np.subtract(kd_close["folds"], ce["folds"]))
    assert margin["ce"]["difference"] == pytest.approx(expected) and margin["ce"]["beyond_noise"]
    # both baselines within one error of the best: the one with the higher mean
    ce_close = _row(0, "ce", [0.86, 0.875, 0.85, 0.875, 0.885])
    assert decide([ce_close, kd_close, lelp], "one_se")["answer"] == 0
    assert "the teacher may not help" in decide([ce_close, kd_close, lelp], "one_se")["teacher"]
    assert decide(rows, "one_se")["teacher"].startswith("the teacher helps this task: lelp (trial 2)")
    worse = [ce, _row(1, "kd", [0.70, 0.71, 0.72, 0.70, 0.71])]
    assert decide(worse, "one_se")["teacher"].startswith("the teacher does not help this task")


def test_finalists_are_the_best_trial_of_each_of_the_best_methods_and_the_baselines():
    method = {"method": CategoricalDistribution(["ce", "kd", "lelp", "kmeans"])}
    trials = [create_trial(value=v, params={"method": m}, distributions=method, user_attrs={"method": m})
              for v, m in ((0.9, "lelp"), (0.9, "lelp"), (0.85, "kmeans"), (0.8, "ce"), (0.7, "kd"), (0.6, "kd"))]
    for number, t in enumerate(trials):
        t.number = number
    chosen = finalists(trials, 2)
    assert [t.number for t in chosen] == [0, 2, 4, 3]  # one trial per method: trial 1 is LELP again
    assert [t.number for t in finalists(trials, 3)] == [0, 2, 3, 4]  # the student alone among the best three
    assert [t.number for t in finalists(trials[3:], 1)] == [3, 4]


@pytest.mark.slow
def test_finalists_are_compared_on_the_same_folds_and_an_interrupted_decision_resumes(tweets_cache_dir, tmp_path,
                                                                                      monkeypatch):
    from lelp_lightning.tune import study as study_module

    args = tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "3", "--tune.seeds", "1", "--tune.methods",
                     "[ce, kd, lelp]", "--tune.cv_top", "1", "--tune.progress", "false", cv_folds=3)
    runs, fit_trial = [], study_module.fit_trial

    def interrupted(run_args, *rest, **kwargs):  # the fifth fold run is stopped by a Ctrl-C
        if "--data.folds" in run_args:
            runs.append(run_args)
            if len(runs) == 5:
                raise KeyboardInterrupt
        return fit_trial(run_args, *rest, **kwargs)

    monkeypatch.setattr(study_module, "fit_trial", interrupted)
    first = run_main("tune", *args)
    assert first.returncode == 130, first.stderr[-3000:]
    before = {t.number: (t.state, t.value) for t in load(tmp_path).trials}
    assert sorted(s.name for s, _ in before.values()).count("FAIL") == 1
    monkeypatch.setattr(study_module, "fit_trial", fit_trial)
    done = run_main("tune", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path)
    for number, (state, value) in before.items():  # finished work is kept, not redone
        if state in FINISHED:
            assert (study.trials[number].state, study.trials[number].value) == (state, value)
    search = [t for t in study.trials if "cv_of" not in t.user_attrs]
    folds = [t for t in study.trials if "cv_of" in t.user_attrs and t.state == TrialState.COMPLETE]
    assert len(search) == 3
    finalists_run = sorted({t.user_attrs["cv_of"] for t in folds})
    assert len(folds) == 3 * len(finalists_run)  # every finalist on every fold, once
    assert {search[n].user_attrs["method"] for n in finalists_run} >= {"ce", "kd"}
    folder = tmp_path / "tune" / "quickstart"
    by_fold = {}
    for t in folds:  # the same folds and seed for every finalist; a fold's value is its held-out accuracy
        config = yaml.safe_load((folder / "trials" / f"trial_{t.number:04d}" / "config.yaml").read_text())
        assert config["data"]["folds"] == 3 and config["data"]["fold"] == t.user_attrs["cv_fold"]
        by_fold.setdefault(t.user_attrs["cv_fold"], set()).add((config["data"]["fold_seed"],
                                                               config["seed_everything"]))
        assert t.params == search[t.user_attrs["cv_of"]].params
        assert not t.intermediate_values  # never pruned
        assert t.value == pytest.approx(last_val_accuracy(folder / "trials" / f"trial_{t.number:04d}"))
    assert sorted(by_fold) == [0, 1, 2] and all(len(seeds) == 1 for seeds in by_fold.values())
    # the answer is the cross-validated one, recomputed here from the fold values (one-SE rule)
    values = {n: [next(t.value for t in folds if t.user_attrs["cv_of"] == n and t.user_attrs["cv_fold"] == f)
                  for f in range(3)] for n in finalists_run}
    means = {n: statistics.fmean(v) for n, v in values.items()}
    best = max(finalists_run, key=lambda n: (means[n], search[n].value, -n))
    answer = best
    if search[best].user_attrs["method"] not in ("ce", "kd"):
        close = [n for n in finalists_run if search[n].user_attrs["method"] in ("kd", "ce")
                 and means[best] - means[n] <= statistics.stdev(np.subtract(values[best], values[n])) / 3 ** 0.5]
        answer = max(close, key=lambda n: means[n]) if close else best
    assert f"best: trial {answer}" in done.stdout and "answer (one_se rule)" in done.stdout
    assert json.loads((folder / "refit.json").read_text())["trial"] == answer
    board = (folder / "leaderboard.md").read_text()
    assert "finalists on 3 folds" in board and "against the baselines, paired over the folds" in board
    notes = pd.read_csv(folder / "leaderboard.csv")["note"].dropna().tolist()
    assert sum("fold" in n for n in notes) == len(folds) + 1  # the interrupted one is listed too (failed)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_killed_workers_fold_run_is_failed_and_run_again_not_waited_for(tmp_path):
    import time

    import optuna

    from lelp_lightning.runlayer.studies import open_storage
    from lelp_lightning.tune.study import TuneOptions, cross_validate

    storage = open_storage(None, tmp_path, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    method = {"method": CategoricalDistribution(["ce", "kd", "lelp"])}
    for value, name in ((0.8, "ce"), (0.85, "kd"), (0.9, "lelp")):
        study.add_trial(create_trial(value=value, params={"method": name}, distributions=method,
                                     user_attrs={"method": name}))
    for number in range(3):  # every finalist's two folds done, but fold 1 of trial 2 whose worker was killed
        for fold in range(2):
            attrs = {"method": study.trials[number].user_attrs["method"], "cv_of": number, "cv_fold": fold,
                     "cv_folds": 2}
            if (number, fold) != (2, 1):
                study.add_trial(create_trial(value=0.7 + fold / 10, params=study.trials[number].params,
                                             distributions=method, user_attrs=attrs))
                continue
            killed = study.ask(fixed_distributions=method)
            for key, value in attrs.items():
                killed.set_user_attr(key, value)
            storage.record_heartbeat(killed._trial_id)
    time.sleep(4.0)  # past the grace period (the database clock counts whole seconds): the trial is stale
    ran = []
    cross_validate(study, lambda trial: ran.append(dict(trial.user_attrs)) or 0.75,
                   TuneOptions(cv_folds=2, cv_top=1, progress=False), tmp_path)
    assert [(a["cv_of"], a["cv_fold"]) for a in ran] == [(2, 1)]  # only the killed one runs again
    states = [(t.user_attrs.get("cv_of"), t.user_attrs.get("cv_fold"), t.state) for t in study.trials]
    assert (2, 1, TrialState.FAIL) in states and (2, 1, TrialState.COMPLETE) in states
