"""The `lelp` console script end to end on real data, and every shipped config."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import (
    CONFIGS,
    at_least_majority,
    run_lelp,
    run_main,
    run_teacher_metrics,
    tiny_run_args,
    tiny_tweets_teacher_metrics,
    write_logger_config,
)

from lelp_lightning.cli import main

ROOT = CONFIGS.parent
# Every shipped run config: all of configs/ (every folder, new ones included) but configs/tune, configs/active and
# configs/search (the options of `lelp tune`, `lelp active` and `lelp search`, exercised by tests/tune, tests/active
# and tests/search), and the YAML under benchmarks/ and examples/ (benchmarks/results/ holds run records, not configs).
OPTION_FOLDERS = {"configs/tune", "configs/active", "configs/search"}
ALL_CONFIGS = sorted(p.relative_to(ROOT).as_posix() for folder in ("configs", "benchmarks", "examples")
                     for p in (ROOT / folder).rglob("*.yaml")
                     if "results" not in p.relative_to(ROOT).parts
                     and p.parent.relative_to(ROOT).as_posix() not in OPTION_FOLDERS)


def test_the_shipped_config_list_covers_every_folder_of_configs():
    folders = {p.parent.relative_to(ROOT).as_posix() for p in CONFIGS.rglob("*.yaml")}
    listed = {Path(c).parent.as_posix() for c in ALL_CONFIGS}
    assert folders <= listed | OPTION_FOLDERS
    assert {"configs/method", "configs/experiments", "benchmarks/accuracy"} <= listed


@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_every_shipped_config_parses(config, capsys):
    stack = ["--config", str(CONFIGS / "quickstart.yaml")]
    if config != "configs/quickstart.yaml":
        stack += ["--config", str(ROOT / config)]
    with pytest.raises(SystemExit) as done:
        main(["fit", *stack, "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: lelp_lightning" in printed


def bare_class_paths(node):
    """Every ``class_path`` in a loaded YAML document that is a bare name (no module path)."""
    if isinstance(node, dict):
        if isinstance(node.get("class_path"), str) and "." not in node["class_path"]:
            yield node["class_path"]
        for value in node.values():
            yield from bare_class_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from bare_class_paths(value)


def test_every_bare_class_path_is_imported_before_lelp_parses():
    """jsonargparse resolves a bare ``class_path`` only among subclasses already imported (and lelp's short
    names among the registered classes), so in one pytest process a module another test imported could hide
    a name that fails in a fresh ``lelp``: check in a fresh interpreter that imports what the console script
    imports before it parses."""
    names = sorted({name for config in ALL_CONFIGS
                    for name in bare_class_paths(yaml.safe_load((ROOT / config).read_text()))})
    script = ("import sys\n"
              "import lelp_lightning.runs\n"  # what `lelp fit` imports before it parses (cli.py imports it lazily)
              "from lelp_lightning.registry import load_plugins\n"
              "load_plugins()\n"
              "from lelp_lightning.objectives import objectives\n"
              "from lelp_lightning.strategies import strategies\n"
              "from lelp_lightning.students import students\n"
              "known = {v.__name__ for m in list(sys.modules.values()) if m is not None\n"
              "         for v in list(vars(m).values()) if isinstance(v, type)}\n"
              "known |= {n for r in (strategies, objectives, students) for n in r.names()}  # short names\n"
              "print('\\n'.join(n for n in sys.argv[1:] if n not in known))\n")
    proc = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [], f"bare class_path names no module imported before parsing: {proc.stdout.split()}"


def test_strategies_subcommand_lists_names_and_descriptions(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "lelp" in out and "LinearProjectionStrategy" in out and "vanilla knowledge distillation" in out


def only_dirs(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def finished_run(tweets_cache_dir, tmp_path_factory):
    """One real `lelp fit` through the console script: 300 tweets, MiniLM teacher, LELP S=2, 2 epochs.

    A subprocess on purpose: the one successful fit of the suite run as a user runs it (the installed
    console script, its exit status, what it prints), and the one with W&B, whose run lives in module state
    that an in-process run would leave behind for the next one."""
    run_dir = tmp_path_factory.mktemp("run")
    before = only_dirs(tweets_cache_dir)
    proc = run_lelp("fit", *tiny_run_args(tweets_cache_dir, run_dir, "--data.strategy.num_subclasses", "2"),
                    cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc, before


def test_fit_prints_and_writes_the_summary_with_config_and_logs(finished_run, tweets_cache_dir):
    run_dir, proc, _ = finished_run
    version = run_dir / "tiny" / "version_0"
    summary = json.loads((version / "summary.json").read_text())
    for who in ("student", "teacher"):
        for metric in ("test_accuracy", "test_macro_f1"):
            assert 0.0 <= summary[who][metric] <= 1.0
    assert summary["majority_class_rate"] == pytest.approx(0.70, abs=0.03)  # 70% negative tweets
    # the teacher's test accuracy is recomputed from the cache: argmax of the cached test logits vs the labels
    teacher = tiny_tweets_teacher_metrics(tweets_cache_dir)
    assert summary["teacher"]["test_accuracy"] == pytest.approx(teacher["accuracy"], abs=1e-6)
    assert summary["teacher"]["test_macro_f1"] == pytest.approx(teacher["macro_f1"], abs=1e-6)
    assert summary["majority_class_rate"] == pytest.approx(teacher["majority_class_rate"], abs=1e-6)
    assert at_least_majority(summary), summary  # 42/60 = the majority rate; no margin is safe (see helpers)
    assert summary["config"]["data"]["strategy"]["init_args"]["num_subclasses"] == 2
    assert "student" in proc.stdout and "teacher" in proc.stdout and "majority class" in proc.stdout
    assert (version / "config.yaml").is_file()  # LightningCLI's resolved config
    lelp = "lelp_lightning.strategies.linear_projection.LinearProjectionStrategy"  # `class_path: lelp`, as the class
    assert summary["config"]["data"]["strategy"]["class_path"] == lelp
    assert yaml.safe_load((version / "config.yaml").read_text())["data"]["strategy"]["class_path"] == lelp
    metrics = pd.read_csv(version / "metrics.csv")
    assert {"train/loss", "val/accuracy", "test/accuracy"} <= set(metrics.columns)
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B wrote its offline run
    assert "teacher cache hit" in proc.stderr  # the session cache fixture built it; the CLI reused it
    dm_key = [p for p in tweets_cache_dir.iterdir() if p.is_dir() and not p.name.startswith("encoder-")]
    assert len(dm_key) == 3  # one teacher-output entry per split: the ones recomputed from above


def test_a_second_identical_run_does_not_run_the_teacher(finished_run, tweets_cache_dir, tmp_path):
    run_dir, _, before = finished_run
    stamps = {p: p.stat().st_mtime_ns for p in tweets_cache_dir.rglob("manifest.json")}
    proc = run_main("fit", *tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy.num_subclasses", "2",
                                          "--trainer.max_epochs", "1", wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher cache hit" in proc.stderr and "running the teacher" not in proc.stderr
    assert only_dirs(tweets_cache_dir) == before
    assert {p: p.stat().st_mtime_ns for p in tweets_cache_dir.rglob("manifest.json")} == stamps


def test_validate_test_and_predict_on_the_checkpoint(finished_run, tmp_path):
    run_dir, _, _ = finished_run
    version = run_dir / "tiny" / "version_0"
    ckpt = next((version / "checkpoints").glob("*.ckpt"))
    summary = json.loads((version / "summary.json").read_text())
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert "strategy" in stored["DistillDataModule"]  # the fitted strategy travels with the checkpoint
    logs = write_logger_config(tmp_path, wandb=False)
    for command in ("validate", "test", "predict"):
        proc = run_main(command, "--config", str(version / "config.yaml"), "--config", str(logs),
                        "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(ckpt))
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
        if command == "test":  # the checkpoint reproduces the accuracy the fit reported
            line = next(l for l in proc.stdout.splitlines() if "test/accuracy" in l)
            assert float(line.split()[-2]) == pytest.approx(summary["student"]["test_accuracy"], abs=1e-6)
    predictions = pd.read_csv(next(tmp_path.rglob("predictions.csv")))
    assert list(predictions.columns) == ["row_id", "prediction", "p_negative", "p_positive"]
    assert len(predictions) == 60 and set(predictions["prediction"]) <= {"negative", "positive"}
    assert (predictions[["p_negative", "p_positive"]].sum(axis=1) - 1).abs().max() < 1e-5


def test_one_subclass_is_vanilla_kd_through_the_same_path(tweets_cache_dir, tmp_path):
    proc = run_main("fit", *tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy.num_subclasses", "1",
                                          "--trainer.max_epochs", "1", wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = next(tmp_path.rglob("*.ckpt"))
    head = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["student.head.weight"]
    assert head.shape[0] == 2  # C·S = 2·1


def test_user_csv_with_a_hugging_face_teacher(tmp_path):
    """configs/data/text_file.yaml + configs/teacher/hf_classifier.yaml (tiny random BERT, no download)."""
    from lelp_lightning.sources import Tweets

    tweets = Tweets(max_rows=200)
    rows = [(t, ["neg", "pos"][l]) for s in ("train", "val", "test")
            for t, l in zip(tweets.split(s).texts, tweets.split(s).labels, strict=True)]
    pd.DataFrame(rows, columns=["tweet", "mood"]).to_csv(tmp_path / "mine.csv", index=False)
    logs = write_logger_config(tmp_path / "runs", wandb=False)
    args = ["--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "data/text_file.yaml"),
            "--config", str(CONFIGS / "teacher/hf_classifier.yaml"), "--config", str(logs),
            "--data.source.path", str(tmp_path / "mine.csv"), "--data.source.text_column", "tweet",
            "--data.source.label_column", "mood", "--data.cache_dir", str(tmp_path / "cache"),
            "--data.progress", "false", "--data.strategy.num_subclasses", "2",
            "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    proc = run_main("fit", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["config"]["data"]["teacher"]["class_path"].endswith("HFSequenceClassifierTeacher")
    assert 0.0 <= summary["student"]["test_accuracy"] <= 1.0
    # the (random, untrained) teacher's accuracy in the summary is the one recomputed from its cache; the student
    # gets no majority-rate bound: distilled from that teacher it scores 12-28 of 40 test rows over seeds 0-3
    teacher = run_teacher_metrics(tmp_path / "cache", args)
    assert summary["teacher"]["test_accuracy"] == pytest.approx(teacher["accuracy"], abs=1e-6)
    assert summary["majority_class_rate"] == pytest.approx(teacher["majority_class_rate"], abs=1e-6)


def test_bad_input_exits_nonzero_with_one_sentence(tmp_path):
    """The console script itself (a subprocess on purpose): bad input is exit status 2 and one sentence."""
    proc = run_lelp("fit", "--config", str(CONFIGS / "quickstart.yaml"),
                    "--config", str(CONFIGS / "data/text_file.yaml"),
                    "--data.source.path", str(tmp_path / "missing.csv"), cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lelp: error: data file") and "does not exist" in last
    assert "Traceback" not in proc.stderr


def test_mlp_student_on_minilm_features_builds_them_once(tweets_cache_dir, tmp_path):
    """configs/student/mlp_minilm.yaml end to end: MiniLM features at 128 tokens are cached in data.cache_dir
    on the first run (beside the teacher's 64-token entries) and read back by the second."""
    cache = tmp_path / "cache"
    shutil.copytree(tweets_cache_dir, cache)
    before = only_dirs(cache)
    student = ("--config", str(CONFIGS / "student/mlp_minilm.yaml"), "--trainer.max_epochs", "1")
    proc = run_main("fit", *tiny_run_args(cache, tmp_path / "one", *student, wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next((tmp_path / "one").rglob("summary.json")).read_text())
    # no majority-rate bound here: an MLP after one epoch scores 36/60 at seed 0 (the majority class is 42/60)
    assert 0.5 <= summary["student"]["test_accuracy"] <= 1.0 and summary["epochs"] == 1
    assert summary["config"]["data"]["featurizer"]["class_path"].endswith("SentenceEncoderFeaturizer")
    state = torch.load(next((tmp_path / "one").rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert state["state_dict"]["student.body.0.weight"].shape == (128, 384)  # input_dim linked from the encoder
    added = only_dirs(cache) - before
    assert len(added) == 3 and all(name.startswith("encoder-") for name in added)  # one entry per split
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("manifest.json")}
    proc = run_main("fit", *tiny_run_args(cache, tmp_path / "two", *student, wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert only_dirs(cache) == before | added
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("manifest.json")} == stamps
    again = json.loads(next((tmp_path / "two").rglob("summary.json")).read_text())
    assert again["student"] == summary["student"]  # same seed, same cached features


def test_mpnet_teacher_config_is_the_reference_rotten_tomatoes_teacher():
    """configs/teacher/mpnet_mlp.yaml builds the reference prototype's Rotten Tomatoes teacher (768→256→C, dropout 0.1,
    AdamW)."""
    from lelp_lightning.teachers import SentenceEncoderTeacher

    teacher_config = yaml.safe_load((CONFIGS / "teacher/mpnet_mlp.yaml").read_text())["data"]["teacher"]
    assert teacher_config["class_path"] == "SentenceEncoderTeacher"  # a bare class name, resolved by jsonargparse
    teacher = SentenceEncoderTeacher(**teacher_config["init_args"])
    assert (teacher.encoder.model, teacher.encoder.max_length,
            teacher.encoder.embedding_dim) == ("all-mpnet-base-v2", 128, 768)
    assert (teacher.head_hidden, teacher.head_dropout, teacher.head_lr, teacher.head_weight_decay,
            teacher.head_epochs) == (256, 0.1, 1e-3, 1e-2, 20)
