"""The shared study layer of tune and search (lelp_lightning.runlayer.studies), against counts made by hand."""

import multiprocessing
import os
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lelp_lightning.errors import LelpError
from lelp_lightning.runlayer.fits import logged_args, run_folder, seed_args
from lelp_lightning.runlayer.studies import (
    FINISHED,
    Owner,
    has_retry,
    max_trials,
    open_storage,
    open_study,
    optimize,
    requeue,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
OWNER = Owner("fingerprint", "abc", "base config", "--tune.study_name")


def _objective(trial: optuna.Trial) -> float:
    """Trial n: fails when n % 3 == 1, is pruned when n % 3 == 2, else completes."""
    x = trial.suggest_float("x", 0, 1)
    if trial.number % 3 == 1:
        raise RuntimeError("a failed fit")
    if trial.number % 3 == 2:
        raise optuna.TrialPruned()
    return x


def test_the_budget_counts_finished_trials_only():
    study = optuna.create_study(direction="maximize")
    optimize(study, _objective, [max_trials(5, FINISHED)], n_trials=100)
    states = [t.state for t in study.trials]
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 5  # stopped at the budget
    assert TrialState.FAIL in states and len(states) == 7  # trials 0..6: two failures on the way, not counted


def test_a_second_process_joins_and_another_run_is_refused(tmp_path):
    storage = open_storage(None, tmp_path, 10, 30)
    made = open_study(storage, "s", tmp_path / "study.db", OWNER, optuna.samplers.RandomSampler(seed=0),
                      setup=lambda study: study.enqueue_trial({"x": 0.5}))
    assert made.user_attrs["fingerprint"] == "abc"
    joined = open_study(open_storage(None, tmp_path, 10, 30), "s", tmp_path / "study.db", OWNER,
                        optuna.samplers.RandomSampler(seed=0), setup=lambda study: study.enqueue_trial({"x": 0.1}))
    assert len(joined.get_trials(states=(TrialState.WAITING,))) == 1  # set up once, by the creator
    assert joined.ask().suggest_float("x", 0, 1) == 0.5
    other = Owner("fingerprint", "xyz", "base config", "--tune.study_name")
    with pytest.raises(LelpError, match=r"study 's' in .* was made for another base config \(fingerprint abc, "
                                        r"this run's xyz\); give this one its own --tune.study_name\."):
        open_study(storage, "s", tmp_path / "study.db", other, optuna.samplers.RandomSampler())


def test_an_owner_mapping_is_compared_as_the_storage_returns_it(tmp_path):
    owner = Owner("identity", {"config": {"a": (1, 2)}}, "space", "--search.name")  # a tuple comes back a list
    storage = open_storage(None, tmp_path, 10, 30)
    open_study(storage, "s", "here", owner, optuna.samplers.RandomSampler())
    assert open_study(storage, "s", "here", owner, optuna.samplers.RandomSampler()).user_attrs["identity"] == {
        "config": {"a": [1, 2]}}
    with pytest.raises(LelpError, match="was made for another space; give this one its own --search.name"):
        open_study(storage, "s", "here", Owner("identity", {"config": {}}, "space", "--search.name"),
                   optuna.samplers.RandomSampler())


def test_a_bad_storage_url_is_one_sentence(tmp_path):
    with pytest.raises(LelpError, match="Optuna storage 'nosuchdb://x' could not be opened"):
        open_storage("nosuchdb://x", tmp_path, 10, 30)


def _killed_worker(folder: Path) -> None:
    """A worker that dies in the middle of its second trial."""
    study = open_study(open_storage(None, folder, heartbeat_interval=1, grace_period=2), "s", "here", OWNER,
                       optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            time.sleep(1.5)  # its heartbeat is recorded, then the process is gone
            os._exit(1)
        return x

    optimize(study, objective, n_trials=3)


def test_a_killed_trial_is_failed_by_the_heartbeat_and_retried_once(tmp_path):
    worker = multiprocessing.get_context("spawn").Process(target=_killed_worker, args=(tmp_path,))
    worker.start()
    worker.join(120)
    assert worker.exitcode == 1
    study = open_study(open_storage(None, tmp_path, heartbeat_interval=1, grace_period=2), "s", "here", OWNER,
                       optuna.samplers.RandomSampler())
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    time.sleep(2.5)  # past the grace period
    optuna.storages.fail_stale_trials(study)
    complete, killed, retry = study.get_trials()
    assert killed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert has_retry(study, killed) and not has_retry(study, complete)
    optimize(study, lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert study.trials[2].state == TrialState.COMPLETE and study.trials[2].params == killed.params  # redone
    assert has_retry(study, killed)


def test_an_interrupted_trial_is_queued_again_with_its_kept_attributes():
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("confirm_of", 3)
    trial.set_user_attr("method", "kd")
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, trial, keep=("confirm_of",))
    again = study.get_trials(states=(TrialState.WAITING,))
    assert len(again) == 1 and again[0].user_attrs == {"retry_of": trial.number, "confirm_of": 3}
    study.add_trial(optuna.trial.create_trial(value=1.0))
    requeue(study, study.trials[-1])  # a finished trial is not redone
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_run_folders_and_run_arguments():
    assert run_folder(["--config", "configs/quickstart.yaml", "--config", "b.yaml"], "runs/x") == Path(
        "runs/x/quickstart")
    assert run_folder(["--data.batch_size", "8"], "r", suffix="-rad") == Path("r/run-rad")
    assert run_folder(["--config", "a.yaml"], "r", "mine", "-rad", "study") == Path("r/mine")
    assert run_folder([], "r", default="study") == Path("r/study")
    quiet = logged_args(Path("f"), "trials", "trial_0001", root_dir=Path("f/trials"))
    assert quiet[quiet.index("--trainer.enable_progress_bar") + 1] == "false"
    assert quiet[quiet.index("--data.progress") + 1] == "false" and quiet[-2:] == ["--trainer.default_root_dir",
                                                                                  "f/trials"]
    assert "--trainer.enable_progress_bar" not in logged_args(Path("f"), "rounds", "round_00", progress=True)
    assert seed_args(2) == ["--seed_everything", "2", "--data.strategy.init_args.seed", "2"]
