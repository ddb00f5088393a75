"""A resumed ``lelp tune`` says that it resumed and how many finished trials it kept; its ``best.yaml`` names the
runs of it after the study, not after the quickstart file the base config came from."""

import pytest
import yaml
from helpers import run_main

from .test_study import tune_args

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


def test_a_resumed_study_says_so_and_best_yaml_is_named_after_the_study(tweets_cache_dir, tmp_path):
    args = tune_args(tweets_cache_dir, tmp_path, "--tune.seeds", "0", "--tune.methods", "[ce, kd]",
                     "--tune.study_name", "my_study", epochs=1)
    first = run_main("tune", *args, "--tune.n_trials", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resum" not in first.stderr
    again = run_main("tune", *args, "--tune.n_trials", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tune: resuming the study 'my_study'" in again.stderr
    assert "2 finished trials kept" in again.stderr, again.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "tune" / "my_study" / "best.yaml").read_text())
    names = [logger["init_args"]["name"] for logger in best["trainer"]["logger"]
             if logger["class_path"].endswith("CSVLogger")]
    assert names == ["my_study"]
