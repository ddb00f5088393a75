"""The subclass report: NMI and purity against scikit-learn / a hand count, n-grams and examples on real text."""

import json

import numpy as np
import pytest
from helpers import run_main, tiny_run_args
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from lelp_lightning.core import UNLABELED
from lelp_lightning.data.subclass_report import nmi, own_subclass, purity, subclass_report


@pytest.mark.parametrize("seed", range(4))
def test_nmi_and_purity_equal_scikit_learn_and_a_hand_count(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 + seed, 300)  # seed 0: a constant labeling
    b = (a + (rng.random(300) < 0.3) * rng.integers(0, 5, 300)) % 5
    assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(b, a), abs=1e-10)
    assert nmi(a, a) == pytest.approx(1.0)
    table = contingency_matrix(b, a)  # rows: fine labels, columns: pseudo-subclasses
    assert purity(a, b) == pytest.approx(table.max(0).sum() / 300)


def test_report_groups_rows_by_their_own_class_and_skips_hidden_fine_labels():
    z = np.zeros((6, 2, 2))
    z[[0, 1], 0, 1] = 5.0  # class 0 rows 0, 1 in subclass 1; row 2 (class 0) in subclass 0
    z[[3, 4, 5], 1, 0] = 5.0
    z[3, 0, 1] = 9.0  # another class's logits do not count
    labels = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(own_subclass(z, labels), [1, 1, 0, 0, 0, 0])
    fine = np.array([7, 7, 8, UNLABELED, 3, 4])
    report = subclass_report(z, labels, fine, class_names=["neg", "pos"])
    assert report["neg"]["sizes"] == [1, 2] and report["pos"]["sizes"] == [3, 0]
    assert report["neg"]["nmi"] == pytest.approx(1.0) and report["neg"]["purity"] == 1.0
    assert report["pos"]["fine_labels"] == 2 and report["pos"]["purity"] == 0.5  # rows 4, 5: one subclass


def test_the_summary_of_a_fit_reports_the_pseudo_subclasses_with_ngrams_and_examples(tweets_cache_dir, tmp_path):
    proc = run_main("fit", *tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy", "kmeans",
                                          "--data.strategy.num_subclasses", "3", "--trainer.max_epochs", "1",
                                          wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    report = summary["subclasses"]
    assert set(report) == {"negative", "positive"}
    assert sum(e["rows"] for e in report.values()) == 210  # the 300 tweets' training split (70%)
    for entry in report.values():
        assert sum(entry["sizes"]) == entry["rows"] and len(entry["sizes"]) == 3
        assert len(entry["ngrams"]) == 3 and len(entry["examples"]) == 3
        for size, examples in zip(entry["sizes"], entry["examples"], strict=True):
            assert len(examples) == min(size, 3) and all(len(e) <= 160 for e in examples)
        assert "nmi" not in entry  # tweets have no fine labels
    assert "pseudo-subclass sizes" in proc.stdout
