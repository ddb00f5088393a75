"""`lelp search` on 300 real tweets: the console script end to end, the cost against a hand count, a killed
worker resumed, bad budgets refused."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from helpers import LELP, run_lelp, run_main, tiny_run_args
from optuna.trial import TrialState

from lelp_lightning.runs import build_cli
from lelp_lightning.search.study import measure_cost

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
SPACE = {"layers": [{"name": "buckets", "option": "data.featurizer.init_args.num_buckets", "values": [4096, 1024]},
                    {"name": "embed_dim", "option": "model.student.init_args.embed_dim", "values": [16, 8, 4]}]}


def search_args(cache_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(SPACE))
    return [*tiny_run_args(cache_dir, tmp_path / "runs", wandb=False), "--trainer.max_epochs", "2",
            "--search.space", str(space), "--search.buckets", "2", "--search.epochs", "1", "--search.seeds", "1",
            "--search.budgets", "[1.0, 0.3]", "--search.root", str(tmp_path / "search"), *extra]


def completed(folder: Path) -> list:
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_the_cost_is_the_hand_count_of_the_students_parameters(tweets_cache_dir, tmp_path):
    cli = build_cli([*tiny_run_args(tweets_cache_dir, tmp_path, wandb=False), "--data.featurizer.num_buckets", "1024",
                     "--model.student.init_args.embed_dim", "8", "--model.student.init_args.hidden_dim", "4"],
                    run=False)
    C_S = cli.model.num_classes * cli.model.num_subclasses
    hand = 1024 * 8 + (8 * 4 + 4) + (4 * C_S + C_S)  # the table, the hidden layer, the C·S head
    assert measure_cost(cli, "params", 1) == {"params": hand, "cost": float(hand)}
    latency = measure_cost(cli, "latency", 4)
    assert latency["params"] == hand and latency["latency_ms"] > 0 and latency["cost"] == latency["latency_ms"]


def test_a_two_layer_search_with_two_workers_through_the_console_script(tweets_cache_dir, tmp_path):
    done = run_lelp("search", *search_args(tweets_cache_dir, tmp_path, "--search.workers", "2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "search" / "quickstart-layernas"
    trials = completed(folder)
    archs = [(t.params["buckets"], t.params["embed_dim"]) for t in trials]
    assert len(archs) == len(set(archs)) <= 2 * 3 * 2  # H · max|options| · L, none run twice by the two workers
    front = pd.read_csv(folder / "front.csv")
    assert len(front) == len(trials) and front["pareto"].any()
    assert front.loc[front["cost"].idxmin(), "pareto"]  # the cheapest candidate is always on the front
    result = json.loads((folder / "search.json").read_text())
    C_S = 2 * 4  # the quickstart: two classes, LELP with S = 4
    default_cost = 4096 * 16 + 16 * C_S + C_S
    assert result["default_cost"] == default_cost
    for chosen in result["chosen"]:
        assert chosen["cost"] <= chosen["budget"] * default_cost
        affordable = front[front["cost"] <= chosen["budget"] * default_cost]
        assert chosen["val_accuracy"] == pytest.approx(affordable["val_accuracy"].max())
        assert Path(chosen["yaml"]).is_file() and len(chosen["test_accuracy"]) == 2
    # the first budget's student is trained first; seed 0 seeds the weights, the batches and the strategy (as tune's)
    first = folder / f"budget_{result['chosen'][0]['budget']:g}" / "seed_0"
    config = yaml.safe_load((first / "config.yaml").read_text())
    assert config["seed_everything"] == 0 and config["data"]["strategy"]["init_args"]["seed"] == 0
    assert (folder / "front.png").is_file()
    # the YAML of a budget is a runnable config of that architecture with the run's own epochs
    chosen = result["chosen"][-1]
    cli = build_cli(["--config", chosen["yaml"]], run=False)
    assert cli.config.trainer.max_epochs == 2
    assert cli.config.model.student.init_args.embed_dim == chosen["values"]["embed_dim"]
    assert cli.config.data.featurizer.init_args.num_buckets == chosen["values"]["buckets"]
    loggers = yaml.safe_load(Path(chosen["yaml"]).read_text())["trainer"]["logger"]
    assert [lg["init_args"]["name"] for lg in loggers if lg["class_path"].endswith("CSVLogger")] == [folder.name]


def test_a_killed_worker_is_resumed_without_running_a_candidate_twice(tweets_cache_dir, tmp_path):
    args = ["search", *search_args(tweets_cache_dir, tmp_path, "--search.seeds", "0",
                                   "--search.heartbeat_interval", "1", "--search.grace_period", "3")]
    folder = tmp_path / "search" / "quickstart-layernas"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([LELP, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (folder / "study.db").is_file():
            try:
                if len(completed(folder)) >= 2:
                    break
            except Exception:  # the tables are being created
                pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / "search.json").exists(), "the search finished before it was killed"
    resumed = run_lelp(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    archs = [(t.params["buckets"], t.params["embed_dim"]) for t in completed(folder)]
    assert len(archs) == len(set(archs)) and (folder / "search.json").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--search.budgets", "[0.01]"], "is below every candidate's cost"),
    (["--search.method", "grid"], "search method must be one of"),
    (["--search.budgets", "[1.5]"], "fractions of the default's cost in (0, 1]"),
])
def test_bad_search_options_are_one_sentence(tweets_cache_dir, tmp_path, extra, message):
    ran = run_main("search", *search_args(tweets_cache_dir, tmp_path, *extra))
    assert ran.returncode == 2 and message in ran.stderr and ran.stderr.count("lelp: error:") == 1, ran.stderr


def test_an_option_the_student_does_not_have_is_one_sentence(tweets_cache_dir, tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text(
        json.dumps({"layers": [{"name": "w", "option": "model.student.init_args.width", "values": [2, 1]}]}))
    ran = run_main("search", *search_args(tweets_cache_dir, tmp_path), "--search.space", str(space))
    assert ran.returncode == 2 and "HashedBagStudent has no option 'width'" in ran.stderr, ran.stderr
