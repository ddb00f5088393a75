"""`lelp tune` end to end on 300 real tweets: the console script, shared storage, resume, pruning, test isolation."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers import LELP, run_lelp, run_main, tiny_run_args, tiny_tweets
from optuna.trial import TrialState

from lelp_lightning.tune.report import baseline_margins, margins_text

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def tune_args(cache_dir: Path, tmp_path: Path, *extra: str, epochs: int = 2, cv_folds: int = 0) -> list[str]:
    """A tiny base run (a 4,096-bucket bag so that a trial takes about a second) and the study's folder; the
    cross-validated decision only when ``cv_folds`` asks for it (tests/tune/test_crossval.py)."""
    return [*tiny_run_args(cache_dir, tmp_path / "runs", wandb=False), "--data.featurizer.num_buckets", "4096",
            "--trainer.max_epochs", str(epochs), "--tune.root", str(tmp_path / "tune"), "--tune.cv_folds",
            str(cv_folds), *extra]


def load(tmp_path: Path, name: str = "quickstart") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'tune' / name / 'study.db'}")


def last_val_accuracy(run_dir: Path) -> float:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return float(metrics["val/accuracy"].dropna().iloc[-1])


def test_a_four_trial_study_through_the_console_script(tweets_cache_dir, tmp_path):
    done = run_lelp("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "4", "--tune.seeds", "2",
                                       "--tune.methods", "[ce, kd, lelp, kmeans]"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "tune" / "quickstart"
    study = load(tmp_path)
    trials = study.get_trials(states=FINISHED)
    assert len(trials) == 4 and len(study.trials) == 4
    assert [t.params["method"] for t in study.trials[:2]] == ["ce", "kd"]  # the baselines are measured first
    board = pd.read_csv(folder / "leaderboard.csv")
    assert sorted(board["trial"]) == [0, 1, 2, 3]
    assert list(board.columns[:5]) == ["trial", "state", "method", "params", "val_accuracy"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert board.iloc[0]["val_accuracy"] == pytest.approx(best.value)
    for t in complete:  # a trial's value is its run's last validation accuracy, as Lightning logged it
        assert t.value == pytest.approx(last_val_accuracy(folder / "trials" / f"trial_{t.number:04d}"))
        assert not (folder / "trials" / f"trial_{t.number:04d}" / "checkpoints").exists()
    refit = json.loads((folder / "refit.json").read_text())
    assert refit["trial"] == best.number and [r["seed"] for r in refit["runs"]] == [0, 1]
    accs = [r["test_accuracy"] for r in refit["runs"]]
    assert refit["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert refit["test_accuracy_std"] == pytest.approx(pd.Series(accs).std())
    # best.yaml reproduces the best trial: its seed-0 refit validates exactly as the trial did
    assert last_val_accuracy(folder / "refit" / "seed_0") == pytest.approx(best.value)
    assert (folder / "refit" / "seed_0" / "checkpoints" / "last.ckpt").is_file()
    for plot in ("optimization_history.png", "param_importances.png"):
        assert (folder / plot).stat().st_size > 1000
    assert "tune quickstart" in done.stderr and "trial 0 complete: ce" in done.stdout  # progress bar, trial lines
    assert f"best: trial {best.number}" in done.stdout
    val_rows = len(tiny_tweets().split("val").labels)
    assert all(t.user_attrs["val_rows"] == val_rows for t in trials)
    against = margins_text(baseline_margins(study, best), val_rows)  # ce and kd ran, so at least one baseline
    assert against.startswith(f"against the baselines on validation ({val_rows} rows;")
    assert against in done.stdout and (folder / "leaderboard.md").read_text().rstrip().endswith(against)
    again = run_main("fit", "--config", str(folder / "best.yaml"),
                     "--trainer.default_root_dir", str(tmp_path / "again"),
                     "--trainer.logger", json.dumps({"class_path": "CSVLogger", "init_args": {
                         "save_dir": str(tmp_path), "name": "again", "version": "v"}}))
    assert again.returncode == 0
    assert last_val_accuracy(tmp_path / "again" / "v") == pytest.approx(best.value)
    refit_run = folder / "refit" / "seed_0"  # the README's last step: the refit student leaves the framework
    shipped = run_main("export", "--config", str(refit_run / "config.yaml"), "--ckpt_path",
                       str(refit_run / "checkpoints" / "last.ckpt"), "--output", str(tmp_path / "student"),
                       "--bench_seconds", "0")
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    assert (tmp_path / "student" / "student.onnx").is_file()


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([LELP, "tune", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_workers_on_one_storage_finish_the_budget_between_them(tweets_cache_dir, tmp_path):
    args = tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "8", "--tune.seeds", "0",
                     "--tune.methods", "[ce, kd, kmeans]", "--tune.cv_top", "1", cv_folds=2)
    workers = [_start(args, tmp_path) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    study = load(tmp_path)
    ran = [t for t in study.trials if not t.user_attrs.get("surplus")]
    search = [t for t in ran if "cv_of" not in t.user_attrs]
    assert len(search) == 8  # not one more, not one less
    assert all(t.state in FINISHED for t in ran)  # none lost
    folds = sorted((t.user_attrs["cv_of"], t.user_attrs["cv_fold"]) for t in ran if "cv_of" in t.user_attrs)
    finalists = sorted({n for n, _ in folds})
    assert folds == [(n, f) for n in finalists for f in (0, 1)]  # every finalist on every fold, once
    assert "finalists on 2 folds" in (tmp_path / "tune" / "quickstart" / "leaderboard.md").read_text()
    assert len({t.user_attrs["worker"] for t in ran}) == 2  # both worked
    folders = sorted(p.name for p in (tmp_path / "tune" / "quickstart" / "trials").iterdir())
    assert folders == [f"trial_{t.number:04d}" for t in ran]  # each trial ran once, in its own folder
    for t in study.trials:
        if t.user_attrs.get("surplus"):  # asked for after the budget was met: failed without running
            assert t.state == TrialState.FAIL and "worker" not in t.user_attrs


def test_a_killed_worker_is_resumed_and_its_trial_redone(tweets_cache_dir, tmp_path):
    args = tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "5", "--tune.seeds", "0",
                     "--tune.methods", "[kd, lelp]", "--tune.heartbeat_interval", "1", "--tune.grace_period", "2",
                     epochs=4)
    worker = _start(args, tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
        db = tmp_path / "tune" / "quickstart" / "study.db"
        if not db.exists():
            continue
        try:
            trials = load(tmp_path).trials
        except Exception:  # the study is being created
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING]
        # killed mid-fit: its parameters are all sampled once its run's arguments ("overrides") are recorded
        if sum(t.state in FINISHED for t in trials) >= 2 and any("overrides" in t.user_attrs for t in running):
            worker.send_signal(signal.SIGKILL)
            break
    worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL, "the worker ended before it could be killed mid-trial"
    before = {t.number: (t.state, t.value) for t in load(tmp_path).trials}
    killed = [n for n, (state, _) in before.items() if state == TrialState.RUNNING]
    assert len(killed) == 1
    time.sleep(2.5)  # past the grace period
    resumed = run_main("tune", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = load(tmp_path)
    after = {t.number: t for t in study.trials}
    for number, (state, value) in before.items():
        if state in FINISHED:  # finished work is kept, not redone
            assert (after[number].state, after[number].value) == (state, value)
    assert after[killed[0]].state == TrialState.FAIL  # never counted as a result
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [t for t in study.trials if retried(t) == killed[0]]
    assert len(retries) == 1 and retries[0].params == after[killed[0]].params  # redone with its parameters
    assert len(study.get_trials(states=FINISHED)) == 5


def test_pruning_stops_a_losing_trial_after_its_first_epoch(tweets_cache_dir, tmp_path):
    pruner = {"class_path": "optuna.pruners.ThresholdPruner", "init_args": {"lower": 1.01}}  # every trial loses
    done = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "2", "--tune.seeds", "0",
                                       "--tune.methods", "[kd]", "--tune.pruner", json.dumps(pruner),
                                       "--tune.progress", "false", epochs=3))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no trial completed" in done.stderr
    for t in load(tmp_path).trials:
        assert t.state == TrialState.PRUNED
        assert list(t.intermediate_values) == [0] and t.user_attrs["epochs"] == 0  # 1 of 3 epochs ran
        metrics = pd.read_csv(tmp_path / "tune" / "quickstart" / "trials" / f"trial_{t.number:04d}" / "metrics.csv")
        assert metrics["val/accuracy"].dropna().shape[0] == 1


def test_selection_reads_validation_only(tweets_cache_dir, tmp_path, monkeypatch):
    """No trial reads the test split (its batches, its labels' metrics); only the final refit does."""
    from lelp_lightning.data.datamodule import DistillDataModule
    from lelp_lightning.tune import report

    reads, phase = [], {"now": "search"}
    for name in ("test_dataloader", "predict_dataloader"):
        original = getattr(DistillDataModule, name)
        monkeypatch.setattr(DistillDataModule, name,
                            lambda self, _o=original, _n=name: reads.append((_n, phase["now"])) or _o(self))
    metrics = DistillDataModule.teacher_metrics
    monkeypatch.setattr(DistillDataModule, "teacher_metrics",
                        lambda self, split="test": (reads.append(("teacher_metrics", phase["now"]))
                                                    if split == "test" else None) or metrics(self, split))
    refit = report.refit
    monkeypatch.setattr(report, "refit", lambda *a, **k: phase.update(now="refit") or refit(*a, **k))
    done = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "3", "--tune.seeds", "1",
                                       "--tune.methods", "[kd, lelp]", "--tune.progress", "false", cv_folds=2))
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(tmp_path).trials
    assert all(t.state in FINISHED for t in trials) and any("cv_of" in t.user_attrs for t in trials)
    assert reads and {p for _, p in reads} == {"refit"}


def test_a_study_refuses_another_base_config_and_bad_options(tweets_cache_dir, tmp_path):
    first = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "1", "--tune.seeds", "0",
                                        "--tune.methods", "[kd]", "--tune.progress", "false"))
    assert first.returncode == 0, first.stderr[-3000:]
    other = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.n_trials", "1", "--tune.seeds", "0",
                                        "--tune.methods", "[kd]", "--tune.progress", "false", epochs=3))
    assert other.returncode == 2
    assert "study 'quickstart'" in other.stderr and "was made for another base config" in other.stderr
    bad = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.methods", "[kdd]"))
    assert bad.returncode == 2 and "method 'kdd' is not in the search space" in bad.stderr
    space = tmp_path / "space.yaml"
    space.write_text("methods:\n  m: {objectives: [kd], params: {tau: [1.0]}}\n")
    bad = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.space", str(space)))
    assert bad.returncode == 2 and "method 'm' has no parameter 'tau'" in bad.stderr
    bad = run_main("tune", *tune_args(tweets_cache_dir, tmp_path, "--tune.storage", "nosuchdb://x"))
    assert bad.returncode == 2 and "Optuna storage 'nosuchdb://x' could not be opened" in bad.stderr
