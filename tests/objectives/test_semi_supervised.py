"""The semi-supervised data setting and the teacher-accuracy estimate α(x) behind SLaM and weighted distillation."""

import shutil

import numpy as np
import pytest
import torch
from helpers import tiny_teacher, tiny_tweets

from lelp_lightning.core import UNLABELED, hide_labels
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.data.labels import choose_labeled_rows
from lelp_lightning.data.teacher_accuracy import TeacherAccuracy, teacher_margin
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import LinearProjectionStrategy
from lelp_lightning.teachers import SentenceEncoderTeacher

NUM_LABELED = 60


# -- α(x) -------------------------------------------------------------------------------------------------
def test_margin_is_the_gap_between_the_two_largest_probabilities():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0 + 1e-300]]))
    np.testing.assert_allclose(teacher_margin(logits), [0.5, 0.1, 0.0], atol=1e-12)


def test_teacher_accuracy_is_the_isotonic_fit_of_correctness_on_margin():
    # margins 0.1 < 0.3 < 0.5 < 0.7 < 0.9 (binary: p = (1 ± m) / 2), correctness 1, 0, 0, 1, 1
    m = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    p1 = (1 + m) / 2
    logits = np.log(np.stack([1 - p1, p1], 1))  # the teacher always says class 1
    labels = np.array([1, 0, 0, 1, 1])
    acc = TeacherAccuracy(logits, labels)
    # pool-adjacent-violators by hand: [1, 0, 0] → 1/3 each, then 1, 1
    np.testing.assert_allclose(acc(logits), [1 / 3, 1 / 3, 1 / 3, 1, 1], rtol=1e-6)
    between = np.log(np.array([[0.2, 0.8], [0.99, 0.01]]))  # margins 0.6 (between the pools), 0.98 (beyond)
    np.testing.assert_allclose(acc(between), [1 / 3 + (1 - 1 / 3) * 0.5, 1.0], rtol=1e-6)
    with pytest.raises(LelpError, match="every row labeled"):
        TeacherAccuracy(logits, np.array([1, 0, -1, 1, 1]))


def test_labeled_rows_are_a_stratified_seeded_sample():
    labels = np.array([0] * 70 + [1] * 30)
    rows = choose_labeled_rows(labels, 20, seed=3)
    assert len(rows) == 20 and np.bincount(labels[rows]).tolist() == [14, 6]
    assert np.array_equal(rows, choose_labeled_rows(labels, 20, seed=3))
    assert not np.array_equal(rows, choose_labeled_rows(labels, 20, seed=4))
    hidden = hide_labels(labels, rows)
    assert (hidden[rows] == labels[rows]).all() and (np.delete(hidden, rows) == UNLABELED).all()
    with pytest.raises(LelpError, match="num_labeled must be between 1 and the 100 training rows"):
        choose_labeled_rows(labels, 101, seed=0)
    with pytest.raises(LelpError, match="cannot hold a stratified sample"):
        choose_labeled_rows(labels, 1, seed=0)


# -- the semi-supervised setting on real tweets --------------------------------------------------------------
@pytest.fixture
def fresh_cache(tweets_cache_dir, tmp_path):
    """A cache with the session's encoder features only (so the teacher's head trains again, quickly)."""
    for entry in tweets_cache_dir.iterdir():
        if entry.name.startswith("encoder-"):
            shutil.copytree(entry, tmp_path / entry.name)
    return tmp_path


def test_hidden_labels_never_reach_the_teacher_head_nor_a_training_batch(fresh_cache, monkeypatch):
    seen = {}
    train_head = SentenceEncoderTeacher._train_head

    def spy(self, x, y):
        seen["x"], seen["y"] = x.numpy().copy(), y.numpy().copy()
        return train_head(self, x, y)

    monkeypatch.setattr(SentenceEncoderTeacher, "_train_head", spy)
    strategy = LinearProjectionStrategy(num_subclasses=2)
    fitted = {}
    fit = strategy.fit
    monkeypatch.setattr(strategy, "fit", lambda emb, labels, *a, **k: (fitted.setdefault("labels", np.array(labels)),
                                                                       fit(emb, labels, *a, **k))[1])

    source = tiny_tweets()
    dm = DistillDataModule(source, tiny_teacher(), strategy, cache_dir=str(fresh_cache), progress=False,
                           num_labeled=NUM_LABELED, labeled_seed=0)
    dm.prepare_data()
    dm.setup("fit")
    truth = source.split("train").labels
    labeled = dm.labeled_rows
    assert len(labeled) == NUM_LABELED < len(truth)

    # the teacher's head trained on the labeled rows' features and labels, nothing else
    features = np.asarray(dm.teacher.features(source, "train", dm.cache))
    np.testing.assert_array_equal(seen["x"], features[labeled])
    np.testing.assert_array_equal(seen["y"], truth[labeled])

    # the cache holds no hidden label, and no training batch carries one
    cached = np.asarray(dm.split_cache("train").label)
    assert (cached[labeled] == truth[labeled]).all() and (np.delete(cached, labeled) == UNLABELED).all()
    position = {int(r): i for i, r in enumerate(source.split("train").row_ids)}
    rows = 0
    for batch in dm.loader("train", shuffle=True, keys={"row_id", "teacher_accuracy", "weight"}):
        pos = np.array([position[int(r)] for r in batch["row_id"]])
        expected = np.where(np.isin(pos, labeled), truth[pos], UNLABELED)
        assert np.array_equal(batch["label"].numpy(), expected)
        rows += len(pos)
    assert rows == len(truth)

    # the strategy groups hidden rows by the teacher's argmax, labeled rows by their label
    argmax = np.asarray(dm.split_cache("train").logits).argmax(1)
    dm.targets.z("train")
    np.testing.assert_array_equal(fitted["labels"], np.where(cached == UNLABELED, argmax, cached))

    # validation stays labeled; the majority rate reads labeled rows only
    assert (np.asarray(dm.split_cache("val").label) >= 0).all()
    assert 0.5 < dm.teacher_metrics("test")["majority_class_rate"] < 1.0


def test_semi_supervised_caches_do_not_collide_with_the_supervised_ones(tweets_cache_dir):
    def keys(**kwargs):
        dm = DistillDataModule(tiny_tweets(), tiny_teacher(), LinearProjectionStrategy(num_subclasses=2),
                               cache_dir=str(tweets_cache_dir), progress=False, **kwargs)
        return [dm.plan.key(s) for s in ("train", "val", "test")]

    supervised, semi, other_seed = keys(), keys(num_labeled=NUM_LABELED), keys(num_labeled=NUM_LABELED, labeled_seed=1)
    assert len(set(supervised + semi + other_seed)) == 9
    assert keys(num_labeled=NUM_LABELED) == semi
    with pytest.raises(LelpError, match="num_labeled must be >= 1"):
        keys(num_labeled=0)


def test_example_weights_are_teacher_accuracy_normalised_to_mean_one(tweets_datamodule):
    dm = tweets_datamodule(LinearProjectionStrategy(num_subclasses=2))
    val = dm.split_cache("val")
    iso = TeacherAccuracy(val.logits, val.label)
    alpha = dm.quality.accuracy("train")
    np.testing.assert_allclose(alpha, iso(dm.split_cache("train").logits))
    assert ((alpha >= 0) & (alpha <= 1)).all()
    weights = dm.quality.weights("train")
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(weights, alpha / alpha.mean(), rtol=1e-5)
    first = next(iter(dm.loader("train", shuffle=True, keys={"teacher_accuracy", "weight"})))
    assert first["weight"].dtype == first["teacher_accuracy"].dtype == torch.float32
    assert first["weight"].shape == first["teacher_accuracy"].shape == first["label"].shape
