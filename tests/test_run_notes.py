"""What a finished run tells its user beyond the numbers: fine labels of one's own data (the oracle and the
subclass report), a warning for a student that predicts one class only, and notices said once per process."""

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import CONFIGS, run_main, tiny_run_args

from lelp_lightning.runs import collapse_warning, fit, format_summary


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """In-process runs without a logger write their config.yaml into the working folder: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


def summary_of(run_dir: Path) -> dict:
    (path,) = run_dir.rglob("summary.json")
    return json.loads(path.read_text())


# -- fine labels of one's own data ----------------------------------------------------------------------------

TOPICS = {"pos": {"food": "delicious tasty meal dinner", "film": "wonderful movie actor scene"},
          "neg": {"food": "stale cold soggy meal", "film": "boring movie dull plot"}}


def write_reviews(path: Path, per_topic: int = 12) -> Path:
    lines = ["review,stars,topic"]
    for label, topics in TOPICS.items():
        for topic, words in topics.items():
            lines += [f"{words} number {i},{label},{topic}" for i in range(per_topic)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_oracle_and_the_subclass_report_read_a_fine_label_column(tmp_path):
    data = write_reviews(tmp_path / "reviews.csv")
    ran = run_main("fit", "--config", str(CONFIGS / "quickstart.yaml"),
                   "--config", str(CONFIGS / "data/text_file.yaml"),
                   "--data.source.path", str(data), "--data.source.text_column", "review",
                   "--data.source.label_column", "stars", "--data.source.fine_label_column", "topic",
                   "--data.strategy", "oracle", "--data.strategy.num_subclasses", "2",
                   "--data.cache_dir", str(tmp_path / "cache"), "--data.progress", "false",
                   "--data.teacher.head_epochs", "3", "--data.batch_size", "8", "--trainer.max_epochs", "1",
                   "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                   "--trainer.default_root_dir", str(tmp_path / "run"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    subclasses = summary_of(tmp_path)["subclasses"]
    assert set(subclasses) == {"neg", "pos"}
    for entry in subclasses.values():  # the oracle's subclasses are the topics: they agree exactly
        assert entry["fine_labels"] == 2 and entry["nmi"] == pytest.approx(1.0)
    assert "NMI 1.00 with its 2 fine labels" in ran.stdout


# -- a student that predicts one class only ------------------------------------------------------------------

def test_a_collapsed_student_is_a_warning_with_its_likely_cause():
    names = ["neg", "pos"]
    assert collapse_warning([0, 60], names, lr=20.0, train_rows=210) == (
        "the student predicts only 'pos' on the test split (all 60 rows); the usual cause is a learning rate too "
        "high for this few training rows (210), or too few epochs: try --model.lr 2 (this run's is 20) or a larger "
        "--trainer.max_epochs.")
    assert collapse_warning([3, 57], names, lr=20.0, train_rows=210) is None
    assert collapse_warning(None, names, lr=20.0, train_rows=210) is None
    summary = {"student": {"test_accuracy": 0.7, "test_macro_f1": 0.41}, "majority_class_rate": 0.7,
               "teacher": {"test_accuracy": 0.72, "test_macro_f1": 0.6}, "fit_seconds": 1.0,
               "warnings": ["the student predicts only 'pos' on the test split (all 60 rows); …"]}
    assert "\nwarning: the student predicts only 'pos' on the test split" in format_summary(summary, Path("s.json"))
    del summary["warnings"]  # a summary.json written before the field existed
    assert "warning" not in format_summary(summary, Path("s.json"))


def test_a_run_whose_student_collapsed_says_so(tweets_cache_dir, tmp_path):
    """The tiny tweets run (210 training rows, 2 epochs at lr 0.02, seed 0) ends with a student that answers
    'negative', the majority class, for all 60 test rows: its accuracy is the majority rate, 42/60
    (helpers.at_least_majority), and the run says why that is likely."""
    ran = run_main("fit", *tiny_run_args(tweets_cache_dir, tmp_path, wandb=False))
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = summary_of(tmp_path)
    assert summary["student"]["test_accuracy"] == pytest.approx(summary["majority_class_rate"])
    assert summary["warnings"] == [
        "the student predicts only 'negative' on the test split (all 60 rows); the usual cause is a learning rate "
        "too high for this few training rows (210), or too few epochs: try --model.lr 0.002 (this run's is 0.02) "
        "or a larger --trainer.max_epochs."]
    assert f"\nwarning: {summary['warnings'][0]}\n" in ran.stdout
    assert f"lelp: warning: {summary['warnings'][0]}" in ran.stderr.splitlines()


# -- notices once per process --------------------------------------------------------------------------------

def test_two_fits_in_one_process_say_each_notice_once(tweets_cache_dir, tmp_path, recwarn, caplog):
    """A study fits many times in one process: Lightning's "fewer batches than the logging interval" warning and
    lelp's "teacher cache hit" are said by the first fit only (a log interval and a cache folder no other test
    uses, so that notices of earlier tests in this process do not count)."""
    cache = tmp_path / "cache"
    shutil.copytree(tweets_cache_dir, cache)
    caplog.set_level(logging.INFO, logger="lelp_lightning")
    for run in ("a", "b"):
        fit(tiny_run_args(cache, tmp_path / run, "--trainer.log_every_n_steps", "977", wandb=False))
    interval = [w for w in recwarn if "is smaller than the logging interval" in str(w.message)]
    assert len(interval) == 1 and "log_every_n_steps=977" in str(interval[0].message)
    assert sum("teacher cache hit" in record.getMessage() for record in caplog.records) == 1
