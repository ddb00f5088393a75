"""The CNN teacher on digits: deterministic, cached, linear in its embedding; `lelp fit` on digits with it."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import CONFIGS, run_main, run_teacher_metrics, write_logger_config

from lelp_lightning.cache import TeacherCache
from lelp_lightning.sources import Digits
from lelp_lightning.teachers import CNNTeacher

TINY_CNN = {"channels": [8, 16], "hidden": 32, "epochs": 8, "lr": 3e-3, "train_batch_size": 64}


def test_cnn_teacher_fit_is_deterministic_cached_and_linear_in_its_embedding(tmp_path, monkeypatch):
    source = Digits()
    test = source.split("test")
    first = CNNTeacher(**TINY_CNN, seed=1)
    first.fit(source, TeacherCache(tmp_path / "a"))
    again = CNNTeacher(**TINY_CNN, seed=1)
    again.fit(source, TeacherCache(tmp_path / "b"))  # another cache: trained again, from scratch
    emb, logits = first.encode(test.texts)
    np.testing.assert_array_equal(again.encode(test.texts)[1], logits)
    W, b = first.classifier()
    assert W.shape == (2, 32) and emb.shape == (len(test), 32)
    np.testing.assert_allclose(logits, emb @ W.T + b, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(1) == test.labels).mean() > 0.85
    other = CNNTeacher(**TINY_CNN, seed=2)
    other.fit(source, TeacherCache(tmp_path / "a"))
    assert not np.array_equal(other.classifier()[0], W)
    # a second run on the same cache loads the saved weights and never trains
    monkeypatch.setattr(CNNTeacher, "_train", lambda *a: pytest.fail("the CNN teacher trained again"))
    loaded = CNNTeacher(**TINY_CNN, seed=1)
    loaded.fit(source, TeacherCache(tmp_path / "a"))
    np.testing.assert_array_equal(loaded.encode(test.texts)[1], logits)
    np.testing.assert_array_equal(loaded.encode_rows(test, np.arange(100, len(test)))[1], logits[100:])


def test_cnn_teacher_trains_on_the_labeled_rows_only(tmp_path, monkeypatch):
    source = Digits()
    seen = {}
    monkeypatch.setattr(CNNTeacher, "_train", lambda self, images, labels: seen.update(n=len(labels)))
    labeled = np.arange(0, 1000, 10)
    CNNTeacher(**TINY_CNN).fit(source, TeacherCache(tmp_path), labeled=labeled)
    assert seen["n"] == 100
    CNNTeacher(**TINY_CNN).fit(source, TeacherCache(tmp_path))  # all rows: another weights file
    assert seen["n"] == 1000 and len(list(tmp_path.glob("cnn-*.pt"))) == 2


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digits-cache")


@pytest.mark.parametrize(("student", "strategy"), [("mlp", "lelp.yaml"), ("cnn", "oracle.yaml")])
def test_lelp_fit_on_digits_with_the_cnn_teacher(student, strategy, digits_cache, tmp_path):
    logs = write_logger_config(tmp_path, wandb=False)
    args = ["--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "experiments/digits.yaml"),
            "--config", str(CONFIGS / "strategy" / strategy), "--config", str(CONFIGS / f"student/{student}.yaml"),
            "--config", str(logs), "--data.cache_dir", str(digits_cache), "--data.progress", "false",
            "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(tmp_path)]
    proc = run_main("fit", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["config"]["model"]["student"]["class_path"].endswith(
        {"mlp": "MLPStudent", "cnn": "CNNStudent"}[student])
    assert summary["config"]["data"]["teacher"]["class_path"].endswith("CNNTeacher")
    majority = summary["majority_class_rate"]
    assert summary["teacher"]["test_accuracy"] > 0.9
    assert summary["student"]["test_accuracy"] > majority + 0.1, summary
    recomputed = run_teacher_metrics(digits_cache, args)  # argmax of the cached test logits vs the labels
    assert summary["teacher"]["test_accuracy"] == pytest.approx(recomputed["accuracy"], abs=1e-6)
    assert summary["majority_class_rate"] == pytest.approx(recomputed["majority_class_rate"], abs=1e-6)
