"""Strategies inside the DistillDataModule on the real cached tweets: row ids, fine labels and reports."""

import json

import numpy as np
import pytest

from conftest import run_lelp, tiny_run_args
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import OracleStrategy, RandomSplitStrategy, SubclassDistillationStrategy
from lelp_lightning.strategies.sampling import row_hash


def test_random_split_z_on_every_split_comes_from_that_split_row_ids(tweets_datamodule):
    dm = tweets_datamodule(RandomSplitStrategy(num_subclasses=3, seed=4))
    for split in ("train", "val", "test"):
        z = dm.subclass_logits(split)
        expected = (row_hash(dm.split_cache(split).row_id, 4) % np.uint64(3)).astype(np.int64)
        np.testing.assert_array_equal(z.argmax(-1), np.repeat(expected[:, None], 2, 1))


def test_the_oracle_on_a_source_without_fine_labels_fails_clearly(tweets_datamodule):
    dm = tweets_datamodule(OracleStrategy(num_subclasses=3))
    with pytest.raises(LelpError, match="'oracle' strategy needs fine_labels for every row"):
        dm.subclass_logits("train")


def test_subclass_distillation_reports_its_own_teacher_accuracy_beside_the_teacher(tweets_datamodule):
    dm = tweets_datamodule(SubclassDistillationStrategy(num_subclasses=2, epochs=3, min_steps=300))
    report = dm.strategy_report("test")
    entry = dm.split_cache("test")
    by_hand = (dm.strategy.class_logits(entry.embedding).argmax(1).numpy() == entry.label).mean()
    assert report["retrained_teacher_accuracy"] == pytest.approx(by_hand)
    # λ = 1 trades class accuracy for subclass diversity, so it is not the original teacher's: report both
    assert "teacher_accuracy" in dm.teacher_metrics("test")


def test_lelp_fit_with_a_strategy_short_name_writes_its_report_in_the_summary(tweets_cache_dir, tmp_path):
    proc = run_lelp("fit", *tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy", "subclass_distillation",
                                          "--data.strategy.num_subclasses", "2", "--data.strategy.min_steps", "200",
                                          "--trainer.max_epochs", "1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["config"]["data"]["strategy"]["class_path"] == "lelp_lightning.strategies.names.subclass_distillation"
    assert 0.5 < summary["strategy"]["retrained_teacher_accuracy"] <= 1.0
