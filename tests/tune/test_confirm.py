"""`lelp tune --tune.confirm_top`: the best trials rerun with more seeds, the answer chosen by their mean."""

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from helpers import run_main
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from lelp_lightning.tune.report import confirmed_values, leaderboard, select_best, top_trials
from lelp_lightning.tune.study import finished

from .test_study import FINISHED, last_val_accuracy, load, tune_args

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
METHOD = {"method": CategoricalDistribution(["kd", "lelp"])}


def _study(search: list[float], confirmations: dict[int, list[float]]) -> optuna.Study:
    """An in-memory study: search trials with ``search`` values, then confirmations {search trial: values}."""
    study = optuna.create_study(direction="maximize")
    for value in search:
        study.add_trial(create_trial(value=value, params={"method": "kd"}, distributions=METHOD,
                                     user_attrs={"method": "kd"}))
    for number, values in confirmations.items():
        for offset, value in enumerate(values, start=1):
            study.add_trial(create_trial(value=value, params={"method": "kd"}, distributions=METHOD,
                                         user_attrs={"method": "kd", "confirm_of": number, "confirm_seed": offset}))
    return study


def test_the_answer_is_the_top_trial_with_the_best_mean_over_its_seeds():
    rng = np.random.default_rng(0)
    for _ in range(30):
        search = rng.choice([0.80, 0.82, 0.84, 0.86, 0.88, 0.9], size=8).tolist()
        k = int(rng.integers(1, 5))
        order = sorted(range(8), key=lambda i: (-search[i], i))[:k]  # numpy-free reference of the top k
        confirmations = {i: rng.uniform(0.78, 0.9, size=2).round(3).tolist() for i in order}
        study = _study(search, confirmations)
        assert [t.number for t in top_trials(study, k)] == order
        assert finished(study) == 8  # confirmations are outside the budget
        means = [np.mean([search[i], *confirmations[i]]) for i in order]
        expected = order[int(np.argmax(means))]  # argmax: the first of equal means, i.e. the higher single run
        best, values = select_best(study, k)
        assert best.number == expected and values == [search[expected], *confirmations[expected]]


def test_without_confirmations_the_answer_is_the_best_single_run():
    study = _study([0.8, 0.9, 0.9, 0.85], {})
    best, values = select_best(study, 0)
    assert best.number == 1 and values == [0.9]  # ties: the earlier trial, as Optuna's best_trial
    assert best.number == study.best_trial.number


def test_a_failed_confirmation_is_left_out_and_the_leaderboard_says_what_each_run_is():
    study = _study([0.8, 0.9], {1: [0.7, 0.72]})
    study.add_trial(create_trial(state=TrialState.FAIL, params={"method": "kd"}, distributions=METHOD,
                                 user_attrs={"method": "kd", "confirm_of": 0, "confirm_seed": 1}))
    assert confirmed_values(study) == {0: [0.8], 1: [0.9, 0.7, 0.72]}
    best, values = select_best(study, 2)
    assert best.number == 0 and values == [0.8]  # 0.8 beats the mean 0.773 of trial 1's three runs
    notes = dict(zip(leaderboard(study)["trial"], leaderboard(study)["note"], strict=True))
    assert notes[1] == "mean over 3 seeds 0.7733" and notes[2] == "confirms trial 1 (seed +1)"


@pytest.mark.slow
def test_a_study_confirms_its_best_trials_with_other_seeds_and_resumes(tweets_cache_dir, tmp_path):
    args = tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "3", "--tune.seeds", "0", "--tune.methods",
                     "[kd, lelp]", "--tune.confirm_top", "2", "--tune.confirm_seeds", "1", "--tune.progress", "false")
    done = run_main("tune", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path)
    search = [t for t in study.trials if "confirm_of" not in t.user_attrs]
    confirms = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert len(search) == 3 and all(t.state in FINISHED for t in search)
    top = sorted((t for t in search if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))[:2]
    assert sorted(t.user_attrs["confirm_of"] for t in confirms) == sorted(t.number for t in top)
    folder = tmp_path / "tune" / "quickstart"
    for c in confirms:
        original = next(t for t in search if t.number == c.user_attrs["confirm_of"])
        assert c.state == TrialState.COMPLETE and c.params == original.params
        assert not c.intermediate_values  # never reported to the pruner
        run = folder / "trials" / f"trial_{c.number:04d}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["seed_everything"] == 1 and config["data"]["strategy"]["init_args"]["seed"] == 1
        assert c.value == pytest.approx(last_val_accuracy(run))
    means = {t.number: np.mean([t.value] + [c.value for c in confirms if c.user_attrs["confirm_of"] == t.number])
             for t in top}
    chosen = max(top, key=lambda t: (means[t.number], t.value, -t.number))
    assert f"best: trial {chosen.number}" in done.stdout and "mean over 2 seeds" in done.stdout
    assert f"trial {chosen.number} " in (folder / "best.yaml").read_text().splitlines()[0]
    board = pd.read_csv(folder / "leaderboard.csv")
    assert sorted(board["trial"]) == list(range(5))
    again = run_main("tune", *args)  # resumed: nothing runs again
    assert again.returncode == 0 and len(load(tmp_path).trials) == 5
    assert f"best: trial {chosen.number}" in again.stdout
