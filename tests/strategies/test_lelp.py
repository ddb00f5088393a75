"""LELP against a hand computation (numpy / scipy), and the target / prediction formulas."""

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse.linalg
import torch
from helpers import gaussian_classes

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives import SubclassCrossEntropy, class_logits, subclass_targets
from lelp_lightning.strategies import LinearProjectionStrategy
from lelp_lightning.strategies.linear_projection import (
    LANCZOS_MIN_DIM,
    haar_orthogonal,
    project_out,
    row_space_basis,
    top_eigenvectors,
)


def numpy_null_projector(W):
    return np.eye(W.shape[1]) - W.T @ np.linalg.pinv(W @ W.T) @ W


def test_null_space_projector_kills_the_classifier_rows():
    x, y, W, b = gaussian_classes(dim=10, num_classes=3)
    P = project_out(torch.eye(10, dtype=torch.float64), row_space_basis(torch.from_numpy(W))).numpy()
    np.testing.assert_allclose(P @ W.T, 0, atol=1e-10)
    np.testing.assert_allclose(P, P.T, atol=1e-12)
    np.testing.assert_allclose(P @ P, P, atol=1e-10)
    assert np.linalg.matrix_rank(P) == 10 - 3
    np.testing.assert_allclose(P, numpy_null_projector(W), atol=1e-10)


def covariance_with_spectrum(spectrum: np.ndarray, seed: int = 0) -> np.ndarray:
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum), len(spectrum))))[0]
    return (q * spectrum) @ q.T


SPECTRA = {  # D = 384: the Lanczos path
    "power law": 1 / np.arange(1, 385),
    "repeated top": np.r_[[5.0] * 3, 3.0, np.linspace(1, 0.1, 380)],  # a 3-fold eigenvalue inside the top 4
    "blobs": np.r_[[40.0, 30, 20, 10], np.full(60, 4.0), np.full(320, 0.25)],
}


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("null_space", [False, True])
def test_top_eigenvectors_by_lanczos_match_lapack(spectrum, null_space):
    """At D >= LANCZOS_MIN_DIM the top eigenvectors come from ARPACK; they must span LAPACK's subspace to
    rounding (repeated eigenvalues included) and come out largest first, orthonormal, sign-normalised."""
    D, k = 384, 4
    assert D >= LANCZOS_MIN_DIM
    m = covariance_with_spectrum(SPECTRA[spectrum])
    W = np.random.default_rng(1).standard_normal((3, D))
    Q = row_space_basis(torch.from_numpy(W)) if null_space else None
    P = numpy_null_projector(W) if null_space else np.eye(D)
    vals, vecs = scipy.linalg.eigh(P @ m @ P, subset_by_index=[D - k, D - 1])
    U = top_eigenvectors(torch.from_numpy(m), k, Q).numpy()
    assert scipy.linalg.subspace_angles(U, vecs).max() < 1e-9
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(np.einsum("ds,de,es->s", U, P @ m @ P, U), vals[::-1], rtol=1e-10)
    assert (U[np.abs(U).argmax(0), np.arange(k)] > 0).all()
    if null_space:
        np.testing.assert_allclose(W @ U, 0, atol=1e-10)


def test_top_eigenvectors_fall_back_to_lapack_when_lanczos_does_not_converge(monkeypatch):
    m = covariance_with_spectrum(1 / np.arange(1, 301))
    expected = top_eigenvectors(torch.from_numpy(m), 3).numpy()

    def no_convergence(*args, **kwargs):
        raise scipy.sparse.linalg.ArpackNoConvergence("not converged", np.zeros(0), np.zeros((300, 0)))

    monkeypatch.setattr(scipy.sparse.linalg, "eigsh", no_convergence)
    fallback = top_eigenvectors(torch.from_numpy(m), 3).numpy()
    np.testing.assert_allclose(fallback, expected, atol=1e-10)  # same vectors, same signs, same order


def test_haar_rotation_is_orthogonal_and_seeded():
    q1 = haar_orthogonal(5, torch.Generator().manual_seed(3)).numpy()
    q2 = haar_orthogonal(5, torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_allclose(q1 @ q1.T, np.eye(5), atol=1e-12)
    np.testing.assert_array_equal(q1, q2)


@pytest.mark.parametrize("null_space", [True, False])
@pytest.mark.parametrize("center", [True, False])
def test_directions_span_the_top_eigenvectors_of_the_projected_class_covariance(null_space, center):
    x, y, W, b = gaussian_classes(n_per_class=300, dim=12, num_classes=2)
    S = 3
    strat = LinearProjectionStrategy(num_subclasses=S, null_space=null_space, center=center, chunk_size=97)
    assert strat.fit(x, y, (W, b)) is strat
    P = numpy_null_projector(W) if null_space else np.eye(12)
    for c in range(2):
        xc = x[y == c] @ P
        m = np.cov(xc.T, bias=True) if center else xc.T @ xc / len(xc)
        vals, vecs = np.linalg.eigh(m)
        top = vecs[:, np.argsort(vals)[::-1][:S]]
        U = strat.directions_of(c).numpy()
        angles = scipy.linalg.subspace_angles(U, top)
        assert angles.max() < 1e-6
        np.testing.assert_allclose(U.T @ U, np.eye(S), atol=1e-8)  # a rotation keeps them orthonormal


def test_z_is_the_projection_of_the_centred_projected_embedding_for_every_class():
    x, y, W, b = gaussian_classes(n_per_class=150, dim=8, num_classes=2)
    strat = LinearProjectionStrategy(num_subclasses=2, z_scale="absolute").fit(x, y, (W, b))
    P = numpy_null_projector(W)
    z = strat.subclass_logits(x[:7]).double().numpy()
    assert z.shape == (7, 2, 2)
    for c in range(2):
        mu = (x[y == c] @ P).mean(0)
        U = strat.directions_of(c).numpy()
        np.testing.assert_allclose(z[:, c, :], (x[:7] @ P - mu) @ U, rtol=1e-5, atol=1e-5)


def test_relative_scale_gives_unit_spread_on_each_class_own_rows():
    x, y, W, b = gaussian_classes(n_per_class=200, dim=8, num_classes=2)
    z = LinearProjectionStrategy(num_subclasses=3).fit(x, y, (W, b)).subclass_logits(x).double().numpy()
    for c in range(2):
        assert np.std(z[y == c, c, :]) == pytest.approx(1.0, abs=1e-5)


def test_rotation_modes_keep_the_subspace_and_no_rotation_is_pure_pca():
    x, y, W, b = gaussian_classes(n_per_class=200, dim=10, num_classes=2)
    fitted = {r: LinearProjectionStrategy(num_subclasses=3, rotation=r).fit(x, y, (W, b))
              for r in ("per_class", "shared", "none")}
    for c in range(2):
        base = fitted["none"].directions_of(c).numpy()
        for r in ("per_class", "shared"):
            U = fitted[r].directions_of(c).numpy()
            assert scipy.linalg.subspace_angles(U, base).max() < 1e-6
            assert not np.allclose(np.abs(U), np.abs(base))  # actually rotated


def test_trivial_null_space_is_refused_clearly():
    x, y, W, b = gaussian_classes(n_per_class=50, dim=2, num_classes=2)
    with pytest.raises(LelpError, match="null space"):
        LinearProjectionStrategy(num_subclasses=2).fit(x, y, (W, b))


def test_more_subclasses_than_rows_is_refused_clearly():
    x, y, W, b = gaussian_classes(n_per_class=3, dim=8, num_classes=2)
    with pytest.raises(LelpError, match="fewer than num_subclasses=4"):
        LinearProjectionStrategy(num_subclasses=4).fit(x, y, (W, b))


@pytest.mark.parametrize(("tau", "beta"), [(1.0, 1.0), (2.0, 0.5), (4.0, 3.0)])
def test_targets_sum_over_subclasses_to_the_teacher_distribution(tau, beta):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(16, 3, generator=g, dtype=torch.float64)
    z = torch.randn(16, 3, 5, generator=g, dtype=torch.float64) * 4
    p = subclass_targets(f, z, tau, beta)
    np.testing.assert_allclose(p.sum(-1).numpy(), torch.softmax(f / tau, -1).numpy(), atol=1e-12)
    # hand computation of one entry
    fe = np.exp(f[2].numpy() / tau); fe /= fe.sum()
    ze = np.exp(z[2, 1].numpy() / beta); ze /= ze.sum()
    assert p[2, 1, 3].item() == pytest.approx(fe[1] * ze[3], rel=1e-12)


def test_class_prediction_is_logsumexp_over_each_class_subclasses():
    g = torch.randn(6, 2 * 4, generator=torch.Generator().manual_seed(1))
    expected = np.log(np.exp(g.numpy().reshape(6, 2, 4)).sum(-1))
    np.testing.assert_allclose(class_logits(g, 2).numpy(), expected, rtol=1e-6)
    # class probabilities from the grouped logits equal the summed C·S softmax
    np.testing.assert_allclose(torch.softmax(class_logits(g, 2), -1).numpy(),
                               torch.softmax(g, -1).view(6, 2, 4).sum(-1).numpy(), rtol=1e-6)


def test_one_subclass_is_vanilla_kd():
    g = torch.Generator().manual_seed(2)
    f, student = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    batch = {"teacher_logits": f, "subclass_logits": torch.randn(8, 2, 1, generator=g),
             "label": torch.zeros(8, dtype=torch.long)}
    loss = SubclassCrossEntropy(tau=2.0)(student, batch)
    p = torch.softmax(f / 2.0, -1).numpy()
    logq = student.numpy() - np.log(np.exp(student.numpy()).sum(-1, keepdims=True))
    assert loss.item() == pytest.approx(-(p * logq).sum(-1).mean(), rel=1e-5)


def test_alpha_mixes_in_the_ground_truth_cross_entropy():
    g = torch.Generator().manual_seed(3)
    batch = {"teacher_logits": torch.randn(8, 2, generator=g), "subclass_logits": torch.randn(8, 2, 3, generator=g),
             "label": torch.randint(0, 2, (8,), generator=g)}
    student = torch.randn(8, 6, generator=g)
    soft = SubclassCrossEntropy(alpha=0.0)(student, batch)
    hard = torch.nn.functional.cross_entropy(class_logits(student, 2), batch["label"])
    mixed = SubclassCrossEntropy(alpha=0.3)(student, batch)
    assert mixed.item() == pytest.approx(0.7 * soft.item() + 0.3 * hard.item(), rel=1e-6)


def test_state_dict_round_trip_and_seed_determinism():
    x, y, W, b = gaussian_classes(n_per_class=100, dim=9, num_classes=2)
    a = LinearProjectionStrategy(num_subclasses=3, seed=5).fit(x, y, (W, b))
    again = LinearProjectionStrategy(num_subclasses=3, seed=5).fit(x, y, (W, b))
    np.testing.assert_array_equal(a.subclass_logits(x).numpy(), again.subclass_logits(x).numpy())
    other = LinearProjectionStrategy(num_subclasses=3, seed=6).fit(x, y, (W, b))
    assert not np.allclose(a.subclass_logits(x).numpy(), other.subclass_logits(x).numpy())
    restored = LinearProjectionStrategy(num_subclasses=3, seed=5)
    restored.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(restored.subclass_logits(x).numpy(), a.subclass_logits(x).numpy())
    assert restored.fingerprint() == a.fingerprint()
    with pytest.raises(LelpError, match="fitted with"):
        LinearProjectionStrategy(num_subclasses=2, seed=5).load_state_dict(a.state_dict())
