"""Cross-validation folds (``data.folds``): they partition the labeled training rows, and a fold run never reads the
run's own validation or test rows."""

import numpy as np
import pytest
from helpers import run_main, tiny_run_args

from lelp_lightning.data.folds import fold_rows
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import KMeansStrategy


def test_the_held_out_folds_partition_the_labeled_rows_stratified():
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=200, p=[0.5, 0.3, 0.2])
    labeled = np.sort(rng.choice(200, size=120, replace=False))
    held = []
    for fold in range(4):
        kept, out = fold_rows(labels, labeled, 4, fold, seed=7)
        assert np.array_equal(np.sort(np.concatenate([kept, out])), np.arange(200))  # every row once, on one side
        assert np.isin(out, labeled).all()  # only labeled rows are scored
        held.append(out)
    assert np.array_equal(np.sort(np.concatenate(held)), labeled)  # the held-out folds partition the labeled rows
    for c in range(3):  # stratified: each fold has its share of every class, to one row
        counts = [int((labels[out] == c).sum()) for out in held]
        assert max(counts) - min(counts) <= 1 and sum(counts) == int((labels[labeled] == c).sum())
    again = fold_rows(labels, labeled, 4, 2, seed=7)
    assert np.array_equal(again[1], held[2])  # the seed fixes the folds
    assert not np.array_equal(fold_rows(labels, labeled, 4, 2, seed=8)[1], held[2])


@pytest.mark.parametrize(("args", "message"),
                         [((5, 5), "between 0"), ((1, 0), "at least 2"), ((3, 0), "class 1 has 2")])
def test_bad_folds_are_one_sentence(args, message):
    labels = np.array([0] * 10 + [1] * 2)
    with pytest.raises(LelpError, match=message):
        fold_rows(labels, None, *args, seed=0)


def test_a_fold_run_sees_the_fold_of_the_training_rows_and_nothing_else(tweets_datamodule):
    full = tweets_datamodule(KMeansStrategy(num_subclasses=2, seed=0))
    ids = {s: np.asarray(full.split_cache(s).row_id) for s in ("train", "val", "test")}
    seen_val = []
    for fold in range(3):
        dm = tweets_datamodule(KMeansStrategy(num_subclasses=2, seed=0), folds=3, fold=fold, fold_seed=1)
        kept, held = fold_rows(full.source.split("train").labels, None, 3, fold, 1)
        train, val = dm.split_cache("train"), dm.split_cache("val")
        assert np.array_equal(train.row_id, ids["train"][kept]) and np.array_equal(val.row_id, ids["train"][held])
        assert np.array_equal(val.label, np.asarray(full.split_cache("train").label)[held])
        assert np.array_equal(val.logits, np.asarray(full.split_cache("train").logits)[held])
        assert not np.isin(np.concatenate([train.row_id, val.row_id]), np.concatenate([ids["val"], ids["test"]])).any()
        assert np.array_equal(dm.split_cache("test").row_id, ids["test"])  # test as it is (a fold run never tests)
        # the student inputs are the same rows: a validation batch equals the full training inputs at those rows
        batch = dm.dataset("val")[np.arange(5)]
        expected = full.dataset("train")[held[:5]]
        for key in ("ids", "offsets", "weights"):
            assert np.array_equal(batch["inputs"][key].numpy(), expected["inputs"][key].numpy())
        # the strategy is fitted on the fold's training rows only, and says so in its fingerprint
        assert len(dm.targets.z("train")) == len(kept) and len(dm.targets.z("val")) == len(held)
        assert dm.strategy_inputs.fingerprint != full.strategy_inputs.fingerprint
        seen_val.append(val.row_id)
    assert np.array_equal(np.sort(np.concatenate(seen_val)), np.sort(ids["train"]))


def test_semi_supervised_folds_hold_out_labeled_rows_only(tweets_datamodule):
    dm = tweets_datamodule(KMeansStrategy(num_subclasses=2, seed=0), num_labeled=60, folds=3, fold=0)
    assert len(dm.split_cache("val")) == 20
    assert (np.asarray(dm.split_cache("val").label) >= 0).all()  # every scored row has its label
    assert len(dm.split_cache("train")) == len(dm.source.split("train").labels) - 20


def test_a_fold_fit_through_the_cli_and_bad_options(tweets_cache_dir, tmp_path):
    args = [*tiny_run_args(tweets_cache_dir, tmp_path, wandb=False), "--trainer.max_epochs", "1",
            "--data.featurizer.num_buckets", "4096"]
    done = run_main("fit", *args, "--data.folds", "3", "--data.fold", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    bad = run_main("fit", *args, "--data.folds", "3", "--data.fold", "3")
    assert bad.returncode == 2 and "data.fold between 0 and folds - 1" in bad.stderr
    assert "Traceback" not in bad.stderr
