"""`lelp active` end to end on 300 real tweets and the MiniLM teacher: the teacher runs on exactly the rows
it must, a run killed at any step resumes to the uninterrupted result, bad options are one sentence."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, run_main, tiny_run_args, tiny_tweets

from lelp_lightning.active.loop import ActiveRun
from lelp_lightning.data.labels import choose_labeled_rows
from lelp_lightning.encoders.sentence import SentenceEncoder
from lelp_lightning.module import DistillModule

pytestmark = pytest.mark.slow
LABELED, BUDGET, ROUNDS = 40, 60, 2


class Killed(BaseException):
    """A process dying at this point (nothing in lelp or Lightning catches it)."""


def active_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["active", *tiny_run_args(tmp_path / "cache", tmp_path / "runs", wandb=False),
            "--data.num_labeled", str(LABELED), "--data.featurizer.num_buckets", "4096",
            "--data.teacher.batch_size", "8", "--active", str(CONFIGS / "active" / "rad.yaml"),
            "--active.budget", str(BUDGET), "--active.rounds", str(ROUNDS), "--active.root", str(tmp_path / "active"),
            "--active.progress", "false", *extra]


def record_embedded(monkeypatch, embedded: list[str], kill=None) -> None:
    """Count every text the teacher's encoder embeds; ``kill(texts)`` may raise :class:`Killed` first."""
    original = SentenceEncoder.embed

    def embed(self, texts):
        if kill is not None:
            kill(texts)
        embedded.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(SentenceEncoder, "embed", embed)


def folder(tmp_path: Path) -> Path:
    return tmp_path / "active" / "quickstart-rad"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run and every text its teacher embedded."""
    tmp_path = tmp_path_factory.mktemp("straight")
    embedded: list[str] = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        record_embedded(monkeypatch, embedded)
        ran = run_main(*active_args(tmp_path))
    assert ran.returncode == 0, ran.stderr[-3000:]
    return tmp_path, embedded, ran


def selections(run_folder: Path) -> list[dict]:
    out = []
    for r in range(1, ROUNDS + 1):
        with np.load(run_folder / f"round_{r:02d}" / "selection.npz") as saved:
            out.append({k: saved[k] for k in ("queried", "kept")})
    return out


def test_the_teacher_runs_on_the_labeled_validation_test_and_queried_rows_only(straight):
    tmp_path, embedded, ran = straight
    source = tiny_tweets()
    train = source.split("train")
    labeled = choose_labeled_rows(train.labels, LABELED, 0)
    queried = np.concatenate([s["queried"] for s in selections(folder(tmp_path))])
    assert len(queried) == BUDGET and len(np.unique(queried)) == BUDGET and not np.isin(queried, labeled).any()
    expected = ([train.texts[i] for i in labeled] + [train.texts[i] for i in queried]
                + list(source.split("val").texts) + list(source.split("test").texts))
    assert sorted(embedded) == sorted(expected)  # each needed row once, no other row ever
    summary = json.loads((folder(tmp_path) / "summary.json").read_text())
    assert summary["teacher_rows_needed"] == summary["teacher_rows_encoded"] == len(expected)
    assert summary["budget"] == BUDGET and summary["pool"] == len(train) - LABELED
    assert [r["train_rows"] for r in summary["rounds"]] == [40, 70, 100]
    assert "test accuracy: student" in ran.stdout


def test_a_second_selector_reuses_every_row_the_first_run_queried(straight, monkeypatch):
    tmp_path, _, _ = straight
    embedded: list[str] = []
    record_embedded(monkeypatch, embedded)
    ran = run_main(*active_args(tmp_path, "--active.selector", "random", "--active.rounds", "1"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    train = tiny_tweets().split("train")
    before = set(np.concatenate([s["queried"] for s in selections(folder(tmp_path))]).tolist())
    with np.load(tmp_path / "active" / "quickstart-random" / "round_01" / "selection.npz") as saved:
        queried = saved["queried"]
    new = [train.texts[i] for i in queried if int(i) not in before]
    assert sorted(embedded) == sorted(new)  # only the rows no run had queried before


def test_a_run_killed_mid_query_between_rounds_and_mid_training_resumes_to_the_same_result(straight, tmp_path,
                                                                                          monkeypatch):
    straight_path, straight_embedded, _ = straight
    train = tiny_tweets().split("train")
    pool_texts = set(train.texts) - {train.texts[i] for i in choose_labeled_rows(train.labels, LABELED, 0)}
    embedded: list[str] = []
    plan = {"query_blocks": 2}

    def kill_in_second_query_block(texts):
        if plan["query_blocks"] and set(texts) <= pool_texts:
            plan["query_blocks"] -= 1
            if plan["query_blocks"] == 0:
                raise Killed("mid-query")

    record_embedded(monkeypatch, embedded, kill_in_second_query_block)
    with pytest.raises(Killed):
        run_main(*active_args(tmp_path))
    assert list(folder(tmp_path).glob("round_01/selection.npz"))
    assert not (folder(tmp_path) / "round_01" / "round.json").exists()

    select = ActiveRun.select

    def kill_before_round_two(self, r, model):
        if r == 2:
            raise Killed("between rounds")
        return select(self, r, model)

    monkeypatch.setattr(ActiveRun, "select", kill_before_round_two)
    with pytest.raises(Killed):
        run_main(*active_args(tmp_path))
    assert (folder(tmp_path) / "round_01" / "round.json").is_file() and not (folder(tmp_path) / "round_02").exists()

    monkeypatch.setattr(ActiveRun, "select", select)
    step = DistillModule.training_step
    calls = {"n": 0}

    def kill_in_round_two_training(self, batch, batch_idx):
        if self.trainer.default_root_dir.endswith("round_02"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise Killed("mid-training")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DistillModule, "training_step", kill_in_round_two_training)
    with pytest.raises(Killed):
        run_main(*active_args(tmp_path))
    assert (folder(tmp_path) / "round_02" / "selection.npz").is_file()
    assert not (folder(tmp_path) / "round_02" / "round.json").exists()

    ran = run_main(*active_args(tmp_path))
    assert ran.returncode == 0, ran.stderr[-3000:]
    for mine, theirs in zip(selections(folder(tmp_path)), selections(folder(straight_path)), strict=True):
        np.testing.assert_array_equal(mine["queried"], theirs["queried"])
        np.testing.assert_array_equal(mine["kept"], theirs["kept"])
    final = torch.load(folder(tmp_path) / f"round_{ROUNDS:02d}" / "student.pt")
    reference = torch.load(folder(straight_path) / f"round_{ROUNDS:02d}" / "student.pt")
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)
    assert sorted(embedded) == sorted(straight_embedded)  # across the four processes: no row encoded twice
    mine, theirs = (json.loads((f / "summary.json").read_text()) for f in (folder(tmp_path), folder(straight_path)))
    assert mine["student"] == theirs["student"]
    again = run_main(*active_args(tmp_path))  # a finished run only prints its summary
    assert again.returncode == 0 and "summary written to" in again.stdout


@pytest.mark.parametrize(("extra", "message"), [
    (["--active.budget", "5000"], "exceeds the pool of 170 unlabeled rows"),
    (["--active.budget", "3", "--active.rounds", "4"], "fewer than one row a round (b < 1)"),
    (["--data.num_labeled", "210"], "there is no unlabeled pool"),
    (["--active.budget", "2.5"], "must be a whole number"),
    (["--active.selector", "nonexistent"], "--active.selector"),
])
def test_bad_active_options_are_one_sentence_and_exit_2(tmp_path, extra, message):
    ran = run_main(*active_args(tmp_path, *extra))
    assert ran.returncode == 2 and message in ran.stderr and ran.stderr.count("lelp: error:") == 1, ran.stderr


def test_a_run_without_labeled_pool_is_refused(tmp_path):
    args = list(active_args(tmp_path))
    at = args.index("--data.num_labeled")
    del args[at:at + 2]
    ran = run_main(*args)
    assert ran.returncode == 2 and "needs an unlabeled pool: set data.num_labeled" in ran.stderr


def test_lelp_selectors_lists_the_registered_selectors():
    ran = run_main("selectors")
    assert ran.returncode == 0
    assert [line.split()[0] for line in ran.stdout.strip().splitlines()] == [
        "confident_teacher_uncertain_student", "entropy", "margin", "rad", "random"]


def test_a_round_featurizer_shows_the_students_what_its_featurizer_is():
    """A round wraps the run's featuriser; a student's start_from reads the wrapped one's kind and attributes (the
    transformer student checks the kind, the static one reads the distilled table)."""
    from lelp_lightning.active.pool import RoundFeaturizer
    from lelp_lightning.data.featurizers import HashedNgramFeaturizer

    inner = HashedNgramFeaturizer(num_buckets=64)
    wrapped = RoundFeaturizer(inner, tiny_tweets(), np.arange(5))
    assert wrapped.kind == inner.kind == "hashed_ngrams"
    assert wrapped.num_buckets == 64 and wrapped.input_dim == 64
    with pytest.raises(AttributeError):
        _ = wrapped.no_such_attribute
