"""Strategies against independent references: scikit-learn PCA / KMeans / GaussianMixture /
AgglomerativeClustering, and hand computations (numpy) for Subclass Distillation, the oracle and the random split."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from helpers import gaussian_classes
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import (
    AgglomerativeStrategy,
    GaussianMixtureStrategy,
    KMeansStrategy,
    LinearProjectionStrategy,
    OracleStrategy,
    PCAStrategy,
    RandomSplitStrategy,
    RowInfo,
    SubclassDistillationStrategy,
)
from lelp_lightning.strategies.subclass_distillation import subclass_distillation_aux_loss


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small problems: OpenMP spin-waits on a shared machine cost more than they give."""
    with threadpool_limits(1):
        yield


def blobs(n_per_class=1500, dim=8, num_classes=2, centers=5, seed=0):
    """Each class a mixture of ``centers`` anisotropic Gaussian blobs: structure worth clustering."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(num_classes):
        means = rng.normal(size=(centers, dim)) * 4
        which = rng.integers(0, centers, n_per_class)
        scales = rng.uniform(0.5, 1.5, size=(centers, dim))
        xs.append(means[which] + rng.normal(size=(n_per_class, dim)) * scales[which])
        ys.append(np.full(n_per_class, c))
    W = rng.normal(size=(num_classes, dim))
    return np.concatenate(xs), np.concatenate(ys), W, rng.normal(size=num_classes)


# -- PCA / LELP subspaces ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [16, 320])  # 320: LANCZOS_MIN_DIM and up, the eigenvectors come from ARPACK
@pytest.mark.parametrize("chunk_size", [64, 100_000])
def test_pca_subspaces_match_scikit_learn_pca_per_class(chunk_size, dim):
    x, y, W, b = gaussian_classes(n_per_class=400, dim=dim, num_classes=3, seed=2)
    S = 4
    strategy = PCAStrategy(num_subclasses=S, chunk_size=chunk_size).fit(x, y, (W, b))
    for c in range(3):
        reference = PCA(n_components=S, svd_solver="full").fit(x[y == c]).components_.T
        assert scipy.linalg.subspace_angles(strategy.directions_of(c).numpy(), reference).max() < 1e-4


@pytest.mark.parametrize("dim", [16, 320])
def test_lelp_subspaces_match_scikit_learn_pca_of_the_null_space_projected_rows(dim):
    x, y, W, b = gaussian_classes(n_per_class=400, dim=dim, num_classes=3, seed=3)
    P = np.eye(dim) - W.T @ np.linalg.pinv(W @ W.T) @ W
    strategy = LinearProjectionStrategy(num_subclasses=4, chunk_size=77).fit(x, y, (W, b))
    for c in range(3):
        reference = PCA(n_components=4, svd_solver="full").fit(x[y == c] @ P).components_.T
        assert scipy.linalg.subspace_angles(strategy.directions_of(c).numpy(), reference).max() < 1e-4


def test_a_float32_cache_gives_the_float64_covariance_despite_a_large_mean():
    x, y, W, b = gaussian_classes(n_per_class=5000, dim=64, num_classes=2, seed=3)
    x = x + 50.0  # a mean far larger than the spread: Σxxᵀ/n − μμᵀ in float32 would lose ~4 digits
    exact = LinearProjectionStrategy(num_subclasses=4, chunk_size=1000).fit(x, y, (W, b))
    single = LinearProjectionStrategy(num_subclasses=4, chunk_size=1000).fit(x.astype(np.float32), y, (W, b))
    cov = single.statistics(x.astype(np.float32), y).second_moment(0, center=True).numpy()
    reference = np.cov(x[y == 0].astype(np.float32).astype(np.float64).T, bias=True)
    assert np.abs(cov - reference).max() < 1e-6 * np.abs(reference).max()
    for c in range(2):
        angles = scipy.linalg.subspace_angles(exact.directions_of(c).numpy(), single.directions_of(c).numpy())
        assert angles.max() < 1e-5
    np.testing.assert_allclose(single.scale.numpy(), exact.scale.numpy(), rtol=1e-5)


# -- k-means ------------------------------------------------------------------------------------------------
def inertia(x, centroids):
    return ((x[:, None, :] - centroids[None]) ** 2).sum(-1).min(1).sum()


@pytest.mark.parametrize("sample_size", [8192, 300], ids=["sample_is_every_row", "chunked_lloyd_passes"])
def test_kmeans_inertia_is_within_1_percent_of_scikit_learn(sample_size):
    x, y, W, b = blobs(n_per_class=1500, dim=8, centers=6, seed=4)
    S, n_init = 4, 10  # enough starts that both reach their best basin; with fewer, compare means over seeds
    strategy = KMeansStrategy(num_subclasses=S, n_init=n_init, sample_size=sample_size, chunk_size=250)
    strategy.fit(x, y, (W, b))
    for c in range(2):
        xc = x[y == c]
        ours = inertia(xc, strategy.centroids[c].numpy())
        reference = KMeans(S, n_init=n_init, random_state=0).fit(xc).inertia_
        assert ours <= reference * 1.01, (c, ours, reference)


def close_blobs(n=6000, dim=32, seed=0):
    """Two classes, each 4 elongated blobs whose means are about as far apart as their rows are from each
    other (strategy_fit's synthetic data, smaller): one k-means++ start in three or so lands in a poor basin."""
    rng = np.random.default_rng(seed)
    means, bases = rng.normal(size=(2, 4, dim)) * 1.5, rng.normal(size=(2, 4, 4, dim)) / 2
    y, k = rng.integers(0, 2, n), rng.integers(0, 4, n)
    x = means[y, k] + 2 * np.einsum("nr,nrd->nd", rng.standard_normal((n, 4)), bases[y, k]) \
        + rng.standard_normal((n, dim)) * 0.5
    return x.astype(np.float32), y, np.zeros((2, dim)), np.zeros(2)


def test_kmeans_screens_sample_starts_so_a_large_class_does_not_stay_in_a_poor_basin():
    x, y, W, b = close_blobs()
    reference = [KMeans(4, n_init=10, random_state=0).fit(x[y == c]).inertia_ for c in range(2)]

    def worst_ratio(sample_starts):
        ratios = []
        for seed in range(6):
            strategy = KMeansStrategy(num_subclasses=4, n_init=1, sample_starts=sample_starts, sample_size=1000,
                                      seed=seed).fit(x, y, (W, b))
            ratios += [inertia(x[y == c], strategy.centroids[c].numpy()) / reference[c] for c in range(2)]
        return max(ratios)

    assert worst_ratio(10) <= 1.01
    assert worst_ratio(1) > 1.05  # the data does have poor basins: one unscreened start lands in one


def test_gmm_initialisation_screens_sample_starts():
    x, y, W, b = close_blobs()
    reference = [GaussianMixture(4, covariance_type="diag", n_init=5, random_state=0).fit(x[y == c]).score(x[y == c])
                 for c in range(2)]

    def worst_shortfall(sample_starts):  # relative: how far below scikit-learn's mean log-likelihood
        gaps = []
        for seed in range(4):
            strategy = GaussianMixtureStrategy(num_subclasses=4, init_starts=1, sample_starts=sample_starts,
                                               sample_size=1000, seed=seed).fit(x, y, (W, b))
            ll = strategy.class_log_likelihood(x).numpy()
            gaps += [(reference[c] - ll[y == c, c].mean()) / abs(reference[c]) for c in range(2)]
        return max(gaps)

    assert worst_shortfall(10) <= 0.01
    assert worst_shortfall(1) > 0.02  # one unscreened start leaves EM in a poor basin on this data


def test_hard_kmeans_z_is_a_one_hot_of_the_nearest_centroid_and_soft_is_minus_the_squared_distance():
    x, y, W, b = blobs(n_per_class=300, dim=5, seed=5)
    hard = KMeansStrategy(num_subclasses=3, margin=7.0).fit(x, y, (W, b))
    soft = KMeansStrategy(num_subclasses=3, assignment="soft").fit(x, y, (W, b))
    d = ((x[:, None, None, :] - hard.centroids.numpy()[None]) ** 2).sum(-1)  # [N,C,S]
    expected = 7.0 * (d == d.min(-1, keepdims=True))
    np.testing.assert_array_equal(hard.subclass_logits(x).numpy(), expected.astype(np.float32))
    d_soft = ((x[:, None, None, :] - soft.centroids.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_allclose(soft.subclass_logits(x).numpy(), -d_soft, rtol=1e-5, atol=1e-4)


# -- GMM ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
@pytest.mark.parametrize("sample_size", [8192, 300], ids=["sample_is_every_row", "sampled_init"])
def test_gmm_mean_log_likelihood_is_within_1_percent_of_scikit_learn(covariance_type, sample_size):
    x, y, W, b = blobs(n_per_class=1200, dim=6, centers=4, seed=6)
    strategy = GaussianMixtureStrategy(num_subclasses=4, covariance_type=covariance_type, sample_size=sample_size,
                                       chunk_size=333).fit(x, y, (W, b))
    ll = strategy.class_log_likelihood(x).numpy()
    for c in range(2):
        xc = x[y == c]
        ours = ll[y == c, c].mean()
        reference = GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(xc).score(xc)
        assert ours >= reference - 0.01 * abs(reference), (c, ours, reference)


def test_gmm_z_is_the_log_posterior_computed_by_hand():
    x, y, W, b = blobs(n_per_class=400, dim=4, centers=3, seed=7)
    strategy = GaussianMixtureStrategy(num_subclasses=3, covariance_type="full").fit(x, y, (W, b))
    z = strategy.subclass_logits(x[:50]).double().numpy()
    for c in range(2):
        weights, means, covs = (t.numpy() for t in strategy.mixture(c))
        log_joint = np.stack([np.log(weights[s]) + scipy.stats.multivariate_normal(means[s], covs[s]).logpdf(x[:50])
                              for s in range(3)], 1)
        expected = log_joint - scipy.special.logsumexp(log_joint, 1, keepdims=True)
        np.testing.assert_allclose(z[:, c], expected, rtol=1e-4, atol=1e-4)


# -- agglomerative --------------------------------------------------------------------------------------------
def test_agglomerative_centroids_are_the_means_of_scikit_learn_ward_clusters():
    x, y, W, b = blobs(n_per_class=200, dim=5, seed=8)
    strategy = AgglomerativeStrategy(num_subclasses=3).fit(x, y, (W, b))
    for c in range(2):
        xc = x[y == c]
        labels = AgglomerativeClustering(3, linkage="ward").fit_predict(xc)
        expected = np.stack([xc[labels == k].mean(0) for k in range(3)])
        ours = strategy.centroids[c].numpy()
        order = [int(np.argmin(((expected - m) ** 2).sum(1))) for m in ours]  # cluster ids are arbitrary
        assert sorted(order) == [0, 1, 2]
        np.testing.assert_allclose(ours, expected[order], atol=1e-10)


def test_a_capped_clustering_names_the_class_above_the_cap(caplog):
    x, y, W, b = blobs(n_per_class=200, dim=5, seed=8)
    with caplog.at_level("WARNING"):
        AgglomerativeStrategy(num_subclasses=3, max_rows=50).fit(x, y, (W, b))
    assert "class 0 has 200 training rows, above max_rows=50" in caplog.text


# -- Subclass Distillation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_subclass_distillation_aux_loss_matches_a_hand_computation(temperature):
    g = np.random.default_rng(9).normal(size=(6, 8)) * 3
    B, K = g.shape
    expected = 0.0
    for i in range(B):
        u_i = (g[i] - g[i].mean()) / g[i].std() / math.sqrt(temperature * K)
        sims = [u_i @ ((g[j] - g[j].mean()) / g[j].std() / math.sqrt(temperature * K)) for j in range(B)]
        expected += math.log(sum(math.exp(s) for s in sims)) / B
    expected -= 1 / temperature + math.log(B)
    assert subclass_distillation_aux_loss(torch.from_numpy(g), temperature).item() == pytest.approx(expected, rel=1e-12)


def test_subclass_distillation_head_loss_and_accuracy():
    x, y, W, b = blobs(n_per_class=300, dim=6, seed=10)
    strategy = SubclassDistillationStrategy(num_subclasses=2, epochs=5, min_steps=400).fit(x, y, (W, b))
    g = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 1])
    class_logits = np.log(np.exp(g.numpy().reshape(5, 2, 2)).sum(-1))
    ce = -np.mean(class_logits[np.arange(5), labels.numpy()] - np.log(np.exp(class_logits).sum(1)))
    assert strategy.loss(g, labels).item() == pytest.approx(ce + subclass_distillation_aux_loss(g).item(), rel=1e-10)
    accuracy = strategy.report(x, y)["retrained_teacher_accuracy"]
    assert accuracy == pytest.approx((strategy.class_logits(x).argmax(1).numpy() == y).mean())
    linear = LogisticRegression(max_iter=2000).fit(x, y).score(x, y)  # what a linear head can reach here
    assert accuracy >= linear - 0.03, (accuracy, linear)


# -- oracle and random split ----------------------------------------------------------------------------------
def test_oracle_puts_the_margin_on_the_fine_label_slot_of_its_own_class_only():
    x, y, W, b = gaussian_classes(n_per_class=60, dim=6, num_classes=2)
    fine = np.where(y == 0, np.arange(len(y)) % 3 * 2, 11 + np.arange(len(y)) % 2)  # class 0: {0,2,4}; 1: {11,12}
    rows = RowInfo(fine_labels=fine)
    strategy = OracleStrategy(num_subclasses=3, margin=5.0).fit(x, y, (W, b), rows=rows)
    np.testing.assert_array_equal(strategy.slots.numpy(), [[0, 2, 4], [11, 12, -1]])
    z = strategy.subclass_logits(x[:4], RowInfo(fine_labels=np.array([2, 12, 7, -1]))).numpy()
    expected = np.zeros((4, 2, 3), np.float32)
    expected[0, 0, 1] = expected[1, 1, 1] = 5.0  # unseen (7) and unknown (-1) fine labels: uniform
    np.testing.assert_array_equal(z, expected)
    with pytest.raises(LelpError, match="class 0 has 3 distinct fine labels .* num_subclasses=2"):
        OracleStrategy(num_subclasses=2).fit(x, y, (W, b), rows=rows)
    with pytest.raises(LelpError, match="needs fine_labels"):
        OracleStrategy(num_subclasses=3).fit(x, y, (W, b))


def test_random_split_depends_on_the_row_id_only_and_is_balanced():
    x, y, W, b = gaussian_classes(n_per_class=3000, dim=4, num_classes=2)
    ids = np.arange(len(y)) * 13 + 5
    strategy = RandomSplitStrategy(num_subclasses=4).fit(x, y, (W, b), rows=RowInfo(row_ids=ids))
    z = strategy.subclass_logits(x, RowInfo(row_ids=ids)).numpy()
    assert (z[:, 0] == z[:, 1]).all()  # the same subclass in every class
    slot = z[:, 0].argmax(1)
    np.testing.assert_allclose(np.bincount(slot) / len(slot), 0.25, atol=0.02)
    shuffled = np.random.default_rng(0).permutation(len(y))  # another split / order: same row, same subclass
    z2 = strategy.subclass_logits(x[shuffled] * 0, RowInfo(row_ids=ids[shuffled])).numpy()
    np.testing.assert_array_equal(z2, z[shuffled])
    other_seed = RandomSplitStrategy(num_subclasses=4, seed=1).fit(x, y, (W, b), rows=RowInfo(row_ids=ids))
    assert (other_seed.subclass_logits(x, RowInfo(row_ids=ids)).numpy()[:, 0].argmax(1) != slot).mean() > 0.6
    with pytest.raises(LelpError, match="needs row_ids"):
        strategy.subclass_logits(x[:3])
