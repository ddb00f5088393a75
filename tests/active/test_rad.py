"""RAD's choice of rows against independent references: the minimax distribution against scipy's LP solver,
DepRound's marginals against the target probabilities over many draws, the selectors against numpy."""

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.stats import entropy

from lelp_lightning.active.depround import cap_marginals, dep_round
from lelp_lightning.active.rad import gains, guaranteed_gain, minimax_distribution
from lelp_lightning.active.selectors import RoundView, selectors
from lelp_lightning.errors import LelpError


def lp_minimax(g: np.ndarray, m: int) -> tuple[np.ndarray, float]:
    """max_p Σ p_i g_i − (the m largest p_i g_i) over the simplex, as an LP: the adversary's best m-subset is
    the knapsack max_c Σ c_i p_i g_i (0 ≤ c ≤ 1, Σ c ≤ m), replaced by its dual min mλ + Σ μ_i, λ + μ_i ≥ p_i g_i."""
    n = len(g)
    # variables: p (n), λ (1), μ (n); minimise −(Σ p g − mλ − Σ μ)
    cost = np.concatenate([-g, [m], np.ones(n)])
    a_ub = np.hstack([np.diag(g), -np.ones((n, 1)), -np.eye(n)])  # p_i g_i − λ − μ_i ≤ 0
    a_eq = np.concatenate([np.ones(n), [0.0], np.zeros(n)])[None]
    result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0], bounds=(0, None), method="highs")
    assert result.status == 0
    return result.x[:n], -result.fun


@pytest.mark.parametrize("seed", range(40))
def test_the_closed_form_minimax_distribution_is_the_linear_programs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    g = rng.uniform(0.05, 1.0, n)
    m = int(rng.integers(0, n))
    lp_p, lp_value = lp_minimax(g, m)
    closed = minimax_distribution(g, m)
    assert closed.value == pytest.approx(lp_value, abs=1e-9)
    assert guaranteed_gain(closed.p, g, m) == pytest.approx(lp_value, abs=1e-9)
    assert guaranteed_gain(lp_p, g, m) == pytest.approx(lp_value, abs=1e-7)
    np.testing.assert_allclose(closed.p, lp_p, atol=1e-6)  # generic gains: the optimum is unique
    assert closed.p.sum() == pytest.approx(1.0)
    top = np.argsort(-g, kind="stable")[:closed.k]
    np.testing.assert_allclose(closed.p[top] * g[top], closed.p[top[0]] * g[top[0]])  # the adversary is indifferent


def test_the_support_is_the_top_k_by_gain_and_at_least_min_support():
    g = np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.7])
    result = minimax_distribution(g, mistakes=1, min_support=4)
    assert result.k >= 4 and set(np.flatnonzero(result.p)) == set(np.argsort(-g, kind="stable")[:result.k])
    # a hand computation: k = 2..6 give (k − 1) / Σ_{i≤k} 1/g_(i); sorted gains 0.9 0.8 0.7 0.5 0.2 0.1
    inverse = np.cumsum(1 / np.array([0.9, 0.8, 0.7, 0.5, 0.2, 0.1]))
    values = {k: (k - 1) / inverse[k - 1] for k in range(4, 7)}
    assert result.k == max(values, key=values.get) and result.value == pytest.approx(max(values.values()))


def test_capped_marginals_sum_to_b_and_keep_the_proportions_below_the_cap():
    p = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0])
    q = cap_marginals(p, 3)
    # hand computation: 3·0.5 > 1, so row 0 is capped; the other 2 rows of budget spread over 0.5 of mass: ×4
    np.testing.assert_allclose(q, [1.0, 0.8, 0.4, 0.4, 0.2, 0.2, 0.0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.dirichlet(np.full(20, 0.3))
        b = int(rng.integers(1, 15))
        if np.count_nonzero(p > 0) < b:
            continue
        q = cap_marginals(p, b)
        assert q.sum() == pytest.approx(b) and q.max() <= 1 + 1e-12
        free = q < 1 - 1e-12
        if free.sum() > 1:
            ratio = q[free & (p > 0)] / p[free & (p > 0)]
            np.testing.assert_allclose(ratio, ratio[0])
    with pytest.raises(LelpError, match="3 distinct rows from a distribution over 2 rows"):
        cap_marginals(np.array([0.5, 0.5, 0.0]), 3)


def test_depround_draws_exactly_b_distinct_rows_with_the_target_marginals():
    rng = np.random.default_rng(1)
    q = cap_marginals(rng.dirichlet(np.full(12, 0.7)), 5)
    draws = 20000
    counts = np.zeros_like(q)
    for _ in range(draws):
        chosen = dep_round(q, rng)
        assert len(chosen) == 5 and len(np.unique(chosen)) == 5
        counts[chosen] += 1
    frequency = counts / draws
    # each row's count is Binomial(draws, q_i): within 4.5 standard deviations (Bonferroni over 12 rows, p < 1e-4)
    sigma = np.sqrt(q * (1 - q) / draws)
    assert np.all(np.abs(frequency - q) <= 4.5 * sigma + 1e-12), np.c_[frequency, q]
    np.testing.assert_array_equal(dep_round(np.array([1.0, 0.0, 1.0, 0.0]), rng), [0, 2])  # integral: as given
    with pytest.raises(LelpError, match="sum to an integer"):
        dep_round(np.array([0.5, 0.2]), rng)


def probabilities(n: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(c), n)


def test_gains_are_one_minus_the_margin_or_the_normalised_entropy():
    p = probabilities(50, 3, 0)
    top = np.sort(p, 1)
    np.testing.assert_allclose(gains(p, "margin"), 1 - (top[:, -1] - top[:, -2]))
    np.testing.assert_allclose(gains(p, "entropy"), entropy(p, axis=1) / np.log(3))


@pytest.mark.parametrize("name", selectors.names())
def test_every_selector_returns_b_distinct_pool_positions(name):
    view = RoundView(probabilities(200, 2, 3), 17, np.random.default_rng(0), teacher_error=0.12)
    chosen = selectors.get(name)().select(view)
    assert len(chosen) == 17 and len(np.unique(chosen)) == 17 and chosen.min() >= 0 and chosen.max() < 200


def test_margin_and_entropy_take_the_rows_the_student_is_least_sure_of():
    p = probabilities(100, 2, 4)
    view = RoundView(p, 10, np.random.default_rng(0), 0.1)
    np.testing.assert_array_equal(selectors.get("margin")().select(view),
                                  np.sort(np.argsort(np.abs(p[:, 0] - p[:, 1]))[:10]))
    np.testing.assert_array_equal(selectors.get("entropy")().select(view),
                                  np.sort(np.argsort(-entropy(p, axis=1))[:10]))


def test_rad_queries_the_minimax_marginals_with_the_adversary_set_from_the_teacher_error():
    p = probabilities(300, 2, 5)
    view = RoundView(p, 20, np.random.default_rng(0), teacher_error=0.13)
    rad = selectors.get("rad")()
    assert rad.adversary(view) == 3  # ⌈0.13 · 20⌉
    q = rad.marginals(view)
    assert q.sum() == pytest.approx(20) and q.max() <= 1
    support = np.flatnonzero(q)
    g = gains(p, "margin")
    assert g[support].min() >= g[np.setdiff1d(np.arange(300), support)].max()  # the most informative rows only
    assert len(support) >= 20


def test_the_confident_teacher_selector_keeps_the_rows_the_teacher_is_sure_of():
    selector = selectors.get("confident_teacher_uncertain_student")(keep_fraction=0.5)
    queried = np.array([3, 8, 11, 20])
    student = np.array([[0.5, 0.5], [0.6, 0.4], [0.55, 0.45], [0.5, 0.5]])
    teacher = np.array([[0.99, 0.01], [0.6, 0.4], [0.95, 0.05], [0.51, 0.49]])
    # scores: 0.99·1 = 0.99, 0.6·H(0.6), 0.95·H(0.55), 0.51·1 → rows 3 and 11
    np.testing.assert_array_equal(selector.keep(queried, student, teacher), [3, 11])
    with pytest.raises(LelpError, match="keep_fraction"):
        selectors.get("confident_teacher_uncertain_student")(keep_fraction=0)
