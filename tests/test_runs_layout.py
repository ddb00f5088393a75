"""Where a run's files land, and which configs every command reads: a config that ``lelp fit --print_config``
printed or that a run saved (``<run>/config.yaml``, which hold fit's own ``ckpt_path`` / ``weights_only``) is
read by ``lelp cache`` and by the run parser of tune / search / active; ``lelp cache`` leaves no config.yaml in
the working folder; a run on a data file is named after the file; a resumed fit says where it writes."""

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml
from helpers import CONFIGS, run_main, tiny_run_args


def printed_config(args: list[str]) -> str:
    """What ``lelp fit <args> --print_config`` prints."""
    from lelp_lightning.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code in (0, None)
    return out.getvalue()


@pytest.fixture
def my_run(tweets_cache_dir, tmp_path) -> str:
    """A fit config as a user makes one: ``lelp fit ... --print_config > my_run.yaml``."""
    path = tmp_path / "my_run.yaml"
    path.write_text(printed_config(tiny_run_args(tweets_cache_dir, tmp_path / "runs", wandb=False)))
    assert {"ckpt_path", "weights_only"} <= set(yaml.safe_load(path.read_text()))  # fit's own keys
    return str(path)


def test_lelp_cache_reads_a_printed_fit_config_and_writes_no_config_yaml_here(my_run, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ran = run_main("cache", "--config", my_run)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "train: " in ran.stdout
    assert not (work / "config.yaml").exists(), os.listdir(work)  # issue 32 item 8: it overwrote the root's


def test_the_run_parser_of_tune_search_active_reads_a_printed_fit_config(my_run):
    from lelp_lightning.runs import build_cli

    cli = build_cli(["--config", my_run], run=False)  # what tune's Base, search and active build first
    assert "ckpt_path" not in cli.config


def test_a_fit_config_with_a_ckpt_path_set_still_builds_the_run_elsewhere(my_run, tmp_path):
    from lelp_lightning.runs import build_cli

    values = yaml.safe_load(Path(my_run).read_text())
    values["ckpt_path"], values["weights_only"] = str(tmp_path / "x.ckpt"), True
    (tmp_path / "saved.yaml").write_text(yaml.safe_dump(values))
    cli = build_cli(["--config", str(tmp_path / "saved.yaml")], run=False)
    assert cli.datamodule is not None


def test_an_unknown_top_level_key_is_still_refused(my_run, tmp_path):
    from lelp_lightning.runs import build_cli

    (tmp_path / "typo.yaml").write_text(Path(my_run).read_text() + "ckpt_pth: null\n")
    with pytest.raises(SystemExit):
        build_cli(["--config", str(tmp_path / "typo.yaml")], run=False)


def test_the_quickstart_names_its_run_after_its_data_file_or_its_config():
    from lelp_lightning.runs import run_name

    assert run_name({"source": {"class_path": "TextFile", "init_args": {"path": "data/my_data.csv"}}},
                    [CONFIGS / "quickstart.yaml"]) == "my_data"
    assert run_name({"source": {"class_path": "Newsgroups20", "init_args": {}}},
                    [CONFIGS / "quickstart.yaml", CONFIGS / "data" / "tweets_binary.yaml"]) == "quickstart"
    assert run_name({"source": {"class_path": "Newsgroups20", "init_args": {}}}, []) == "run"


def test_a_resumed_fit_says_where_it_writes(tweets_cache_dir, tmp_path):
    args = [*tiny_run_args(tweets_cache_dir, tmp_path, wandb=False), "--data.featurizer.num_buckets", "4096"]
    first = run_main("fit", *args, "--trainer.max_epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = tmp_path / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    again = run_main("fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {ckpt}; this run writes to {tmp_path / 'tiny' / 'version_1'}" in again.stdout
