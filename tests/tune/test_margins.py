"""The tune report's margin of its answer over the baselines (KD, the student alone), against hand computation."""

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from lelp_lightning.tune.report import baseline_margins, margins_text, select_best

METHODS = {"method": CategoricalDistribution(["ce", "kd", "lelp"])}


def _study(trials: list[tuple[str, float | None]], val_rows: int | None = 400) -> optuna.Study:
    """An in-memory study of (method, value) search trials; a value of None is a pruned trial."""
    study = optuna.create_study(direction="maximize")
    for method, value in trials:
        attrs = {"method": method} | ({"val_rows": val_rows} if val_rows else {})
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(create_trial(state=state, value=value, params={"method": method}, distributions=METHODS,
                                     user_attrs=attrs, intermediate_values={0: 0.99} if value is None else {}))
    return study


def test_margins_are_the_difference_and_its_binomial_standard_error():
    study = _study([("ce", 0.80), ("kd", 0.85), ("kd", 0.84), ("lelp", 0.88), ("ce", None)])
    best, _ = select_best(study, 0)
    margins = baseline_margins(study, best)
    # by hand: sqrt(.88·.12/400 + .85·.15/400) = sqrt(.000264 + .00031875) and sqrt(.000264 + .0004)
    assert [m["method"] for m in margins] == ["kd", "ce"] and [m["trial"] for m in margins] == [1, 0]
    assert margins[0]["difference"] == pytest.approx(0.03) and margins[1]["difference"] == pytest.approx(0.08)
    assert margins[0]["standard_error"] == pytest.approx(math.sqrt(0.00058275))
    assert margins[1]["standard_error"] == pytest.approx(math.sqrt(0.000664))
    assert [m["beyond_noise"] for m in margins] == [False, True]  # 0.03 < 2·0.0241; 0.08 > 2·0.0258
    text = margins_text(margins, 400)
    assert "(400 rows;" in text and "kd (trial 1, 0.8500): +0.0300 ± 0.0241, within noise" in text
    assert "ce (trial 0, 0.8000): +0.0800 ± 0.0258, beyond noise" in text


def test_a_baseline_answer_is_compared_with_the_other_baseline_only():
    study = _study([("ce", 0.90), ("kd", 0.85), ("lelp", 0.70)])
    best, _ = select_best(study, 0)
    margins = baseline_margins(study, best)
    assert [m["method"] for m in margins] == ["kd"] and margins[0]["difference"] == pytest.approx(0.05)


def test_no_margins_without_the_validation_size_or_a_complete_baseline():
    unsized = _study([("kd", 0.8), ("lelp", 0.9)], val_rows=None)
    assert baseline_margins(unsized, select_best(unsized, 0)[0]) == []
    study = _study([("kd", None), ("lelp", 0.9)])
    assert baseline_margins(study, select_best(study, 0)[0]) == []  # a pruned baseline has no final value
    assert margins_text([], 400) == ""
