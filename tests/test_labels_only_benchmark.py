"""The labels-only benchmark (benchmarks/teachers/labels_only.py): its teacher files hold exactly what they claim
(the teacher's argmax label of every row; the top label's log-probability and the documented share of the rest),
its records are written atomically and never rewritten, its plan names the grid's selection, and one real run on
300 tweets reads the file teacher as documented."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from helpers import CONFIGS, TINY_TEACHER, TINY_TWEETS, run_main, tiny_run_args, tiny_teacher, tiny_tweets

from benchmarks.accuracy import spec
from benchmarks.teachers import labels_only
from lelp_lightning import fileio
from lelp_lightning.core import SPLITS
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.strategies import LinearProjectionStrategy


@pytest.fixture(scope="module")
def export(tweets_cache_dir, tmp_path_factory):
    """The session cache (300 tweets, MiniLM teacher) written by `lelp cache --export` as NPZ."""
    folder = tmp_path_factory.mktemp("labels-only-export")
    path = folder / "teacher.npz"
    ran = run_main("cache", *tiny_run_args(tweets_cache_dir, folder, wandb=False), "--export", str(path))
    assert ran.returncode == 0 and "teacher cache hit" in ran.stderr, ran.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def reference(tweets_cache_dir):
    """The tiny MiniLM teacher's own cache entries, split → entry."""
    return DistillDataModule(tiny_tweets(), tiny_teacher(), LinearProjectionStrategy(num_subclasses=2),
                             cache_dir=str(tweets_cache_dir), progress=False).plan.open()


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_labels_file_holds_the_teachers_argmax_label_of_every_row_and_nothing_else(export, reference, tmp_path):
    path = labels_only.write_teacher_file(export, "labels", tmp_path / "labels.jsonl")
    rows = read_jsonl(path)
    classes = tiny_tweets().class_names
    expected = {int(r): classes[int(np.argmax(logits))] for s in SPLITS
                for r, logits in zip(reference[s].row_id, reference[s].logits, strict=True)}
    assert all(set(row) == {"row_id", "label"} for row in rows)
    assert len(rows) == len(expected) == sum(len(reference[s]) for s in SPLITS)
    assert {row["row_id"]: row["label"] for row in rows} == expected
    # the teacher's own answers, not the true labels (the tiny teacher gets some training rows wrong)
    true = {int(r): classes[y] for s in SPLITS for r, y in zip(reference[s].row_id, reference[s].label, strict=True)}
    assert sum(expected[r] != true[r] for r in true) > 0
    before = path.read_bytes()  # an existing file is kept as it is
    assert labels_only.write_teacher_file(export, "top_logprob", path).read_bytes() == before


def test_the_top_label_log_probability_rule_by_hand(tmp_path):
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 3.5], [40.0, -40.0, 0.0]])
    rows = labels_only.top_logprob_rows(np.array([7, 8, 9]), ["a", "b", "c"], logits)
    for row, z in zip(rows, logits, strict=True):
        p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
        top = max(range(3), key=lambda i: p[i])
        assert set(row) == {"row_id", "log_prob_a", "log_prob_b", "log_prob_c"}
        values = [row[f"log_prob_{c}"] for c in "abc"]
        for i, value in enumerate(values):
            shared = math.log(sum(p[j] for j in range(3) if j != top) / 2)  # (1 − p_top) / (C − 1)
            assert value == pytest.approx(math.log(p[top]) if i == top else shared, rel=1e-12)
        assert sum(math.exp(v) for v in values) == pytest.approx(1.0, abs=1e-12)
    assert [row["row_id"] for row in rows] == [7, 8, 9]
    # p_top = 1 − 4e-18 rounds to 1 in float64: the rest's mass comes from the other classes, not from 1 − p_top
    assert rows[2]["log_prob_b"] == rows[2]["log_prob_c"] == pytest.approx(-40.0 - math.log(2), rel=1e-12)
    # two classes: the teacher's own log-softmax, exactly
    binary = labels_only.top_logprob_rows(np.array([1]), ["neg", "pos"], np.array([[0.3, -1.2]]))[0]
    lse = math.log(math.exp(0.3) + math.exp(-1.2))
    assert binary["log_prob_neg"] == pytest.approx(0.3 - lse, rel=1e-14)
    assert binary["log_prob_pos"] == pytest.approx(-1.2 - lse, rel=1e-14)


def test_records_are_written_atomically_and_never_rewritten(tmp_path, monkeypatch):
    path = tmp_path / "cell" / "run.json"
    assert labels_only.write_record(path, {"metrics": {"val_accuracy": 0.5}}) == {"metrics": {"val_accuracy": 0.5}}
    assert json.loads(path.read_text()) == {"metrics": {"val_accuracy": 0.5}} and not fileio.temporaries(path.parent)
    before = path.read_bytes()
    assert labels_only.write_record(path, {"metrics": {"val_accuracy": 0.9}}) == {"metrics": {"val_accuracy": 0.5}}
    assert path.read_bytes() == before

    def crash(*args):
        raise OSError("killed before the rename")

    other = tmp_path / "cell" / "other.json"
    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="killed"):
            labels_only.write_record(other, {"metrics": {}})
    assert not other.exists() and not fileio.temporaries(other.parent)

    monkeypatch.setattr(labels_only, "RECORDS", tmp_path / "records")
    run = labels_only.make_run("tweets2", "labels", "ce", {"lr": 0.02}, 0, False, "select")
    run.path.parent.mkdir(parents=True)
    run.path.write_text(json.dumps({"kept": True}))
    assert labels_only.execute(run, ("0" * 40, False)) == {"kept": True}  # an existing record: nothing runs


def fake(run, val):
    return {run.key: {"metrics": {"val_accuracy": val}}}


def test_the_plan_selects_ce_and_kd_on_validation_then_the_subclass_methods_at_kds_learning_rate():
    assert labels_only.pairs(["tweets2", "rt", "20ng"], ["labels", "top_logprob"]) == [
        ("tweets2", "labels"), ("tweets2", "top_logprob"), ("rt", "labels"), ("20ng", "labels")]
    base = spec.STUDENTS["bag_sparse"].lr
    phases = labels_only.plan([("tweets2", "labels")], 3, {})
    assert phases["final"] == []
    assert [(r.method, r.hp_dict, r.seed, r.test) for r in phases["select"]] == \
        [("ce", {"lr": base * f}, 0, False) for f in (0.5, 1.0, 2.0)] + \
        [("kd", {"lr": base * f, "tau": 1.0}, 0, False) for f in (0.5, 1.0, 2.0)]
    records = {}
    for run, val in zip(phases["select"], (0.80, 0.82, 0.82, 0.84, 0.83, 0.85), strict=True):
        records |= fake(run, val)  # ce ties at 0.82: the first (base lr) wins; kd's best is 2 × base
    phases = labels_only.plan([("tweets2", "labels")], 3, records)
    stage2 = [r for r in phases["select"] if r.method in labels_only.SUBCLASS_METHODS]
    assert [(r.method, r.hp_dict) for r in stage2] == \
        [("lelp", {"lr": 2 * base, "S": s, "beta": b}) for s in (2, 4, 8) for b in (0.5, 1.0, 2.0)] + \
        [(m, {"lr": 2 * base, "S": s, "beta": 1.0}) for m in ("kmeans", "gmm") for s in (2, 4, 8)]
    assert [(r.method, r.hp_dict, r.seed, r.test) for r in phases["final"]] == \
        [("ce", {"lr": base}, s, True) for s in range(3)] + [("kd", {"lr": 2 * base, "tau": 1.0}, s, True)
                                                            for s in range(3)]
    for run in stage2:
        records |= fake(run, 0.9 if run.hp_dict == {"lr": 2 * base, "S": 4, "beta": 2.0} else 0.8)
    finals = labels_only.plan([("tweets2", "labels")], 3, records)["final"]
    assert {(r.method, json.dumps(r.hp_dict, sort_keys=True)) for r in finals} >= {
        ("lelp", json.dumps({"lr": 2 * base, "S": 4, "beta": 2.0}, sort_keys=True)),
        ("kmeans", json.dumps({"lr": 2 * base, "S": 2, "beta": 1.0}, sort_keys=True))}
    assert len(finals) == 15 and {r.seed for r in finals} == {0, 1, 2}
    # the arguments: the file teacher on the variant's file, the subclass methods on the MiniLM encoder's output
    lelp = next(r for r in finals if r.method == "lelp")
    args = lelp.args()
    assert args[args.index("--data.teacher.init_args.path") + 1].endswith("tweets2__minilm__labels.jsonl")
    assert args[args.index("--data.teacher.init_args.outputs") + 1] == "label"
    assert args[args.index("--data.representation") + 1] == "encoder"
    assert "--data.representation" not in next(r for r in finals if r.method == "kd").args()
    top = labels_only.make_run("tweets2", "top_logprob", "kd", {"lr": base, "tau": 1.0}, 0, True, "final").args()
    assert top[top.index("--data.teacher.init_args.outputs") + 1] == "log_probs"


def test_one_real_labels_only_run(tmp_path, tweets_cache_dir, reference, monkeypatch):
    """Export, labels file, prepare and a LELP run on 300 real tweets with the tiny MiniLM teacher (on a copy of the
    session's cache: the file teacher's entries stay out of the cache other tests count)."""
    shutil.copytree(tweets_cache_dir, tmp_path / "cache")
    tweets_cache_dir = tmp_path / "cache"
    monkeypatch.setattr(labels_only, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(labels_only, "FILES", tmp_path / "files")
    monkeypatch.setitem(labels_only.TEACHER_OF, "tiny", "tiny")
    monkeypatch.setattr(labels_only, "STUDENT", "tiny")
    monkeypatch.setitem(spec.TASKS, "tiny", spec.Task("300 tweets", (
        "--config", str(CONFIGS / "data" / "tweets_binary.yaml"),
        "--data.source.init_args.max_rows", str(TINY_TWEETS["max_rows"]), "--data.cache_dir", str(tweets_cache_dir))))
    monkeypatch.setitem(spec.TEACHERS, "tiny", ("MiniLM", (
        "--config", str(CONFIGS / "teacher" / "minilm_mlp.yaml"),
        *(x for k in ("max_length", "head_hidden", "head_epochs") for x in (f"--data.teacher.init_args.{k}",
                                                                            str(TINY_TEACHER[k])))), "encoder"))
    monkeypatch.setitem(spec.STUDENTS, "tiny", spec.Student("bag", spec.STUDENTS["bag_sparse"].args, 0.02, 1, 32))
    monkeypatch.setitem(labels_only.VARIANTS, "labels", labels_only.Variant("labels", "label", ("tiny",)))
    export = labels_only.export_teacher("tiny")
    assert export == labels_only.export_path("tiny") and export.is_file()
    labels_only.write_teacher_file(export, "labels", labels_only.teacher_file("tiny", "labels"))
    labels_only.prepare("tiny", "labels")
    run = labels_only.make_run("tiny", "labels", "lelp", {"lr": 0.02, "S": 2, "beta": 1.0}, 0, True, "final")
    record = labels_only.execute(run, ("0" * 40, False))
    assert json.loads(run.path.read_text()) == record and record["identity"] == run.identity()
    assert not fileio.temporaries(run.path.parent)
    teacher = record["config"]["data"]["teacher"]
    assert teacher["class_path"].endswith("FileTeacher") and teacher["init_args"]["outputs"] == "label"
    assert record["config"]["data"]["representation"] == "encoder"
    assert record["teacher_file"]["sha256"] == labels_only.sha256(labels_only.teacher_file("tiny", "labels"))
    # hard labels keep the teacher's decisions: its test accuracy is the tiny teacher's own
    test = reference["test"]
    assert record["teacher"]["test_teacher_accuracy"] == pytest.approx(
        float((np.asarray(test.logits).argmax(1) == np.asarray(test.label)).mean()), abs=1e-6)
    assert set(record["metrics"]) == {"val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1"}
    assert {"git_sha", "machine", "versions", "threads", "args", "seed"} <= set(record)
    mtime = run.path.stat().st_mtime_ns
    assert labels_only.execute(run, ("1" * 40, False)) == record and run.path.stat().st_mtime_ns == mtime
