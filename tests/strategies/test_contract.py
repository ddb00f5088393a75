"""The contract every registered strategy keeps, plugins included: one test per property, over the registry."""

import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import gaussian_classes
from threadpoolctl import threadpool_limits

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import subclass_targets
from lelp_lightning.registry import load_plugins
from lelp_lightning.strategies import RowInfo, strategies

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "lelp_plugin_example"))
import lelp_plugin_example  # noqa: E402,F401  the shipped example plugin registers itself as any plugin does

load_plugins()
ENTRIES = strategies.entries()
# Options that keep the slow methods quick on tiny data; the algorithms are unchanged.
QUICK = {"subclass_distillation": {"epochs": 2, "min_steps": 60}, "tsne_kmeans": {"max_rows": 60},
         "random_projection_ensemble": {"num_subclasses": 4, "num_projections": 2}}  # S a multiple of M


def make(entry, **options):
    S = 1 if entry.name == "none" else 3
    return entry.cls(**{"num_subclasses": S, **QUICK.get(entry.name, {}), **options})


def rows_for(y):
    i = np.arange(len(y))
    return RowInfo(row_ids=1000 + 7 * i, fine_labels=y * 3 + i % 3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny problems: OpenMP thread spin-waits on a shared machine cost more than they give (t-SNE: ~100×)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data():
    x, y, W, b = gaussian_classes(n_per_class=90, dim=10, num_classes=3, seed=1)
    return x, y, W, b, rows_for(y)


@pytest.fixture(scope="module")
def fitted(data):
    x, y, W, b, rows = data
    return {e.name: make(e, seed=3).fit(x, y, (W, b), rows=rows) for e in ENTRIES}


def test_the_registry_holds_every_strategy_of_the_methods_and_the_plugin():
    expected = {"lelp", "pca", "random_projection", "kmeans", "gmm", "agglomerative", "tsne_kmeans", "random_split",
                "oracle", "none", "subclass_distillation", "norm_bins"}
    assert expected <= set(strategies.names())


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_fit_returns_self_and_z_has_shape_n_c_s(entry, data):
    x, y, W, b, rows = data
    strategy = make(entry)
    assert strategy.fit(x, y, (W, b), rows=rows) is strategy
    z = strategy.subclass_logits(x[:17], rows.slice(0, 17))
    assert z.shape == (17, 3, strategy.num_subclasses) and z.dtype == torch.float32
    assert strategy.transform(x, rows).shape == (len(x), 3, strategy.num_subclasses)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_fit_is_deterministic_under_a_seed(entry, data, fitted):
    x, y, W, b, rows = data
    again = make(entry, seed=3).fit(x, y, (W, b), rows=rows)
    np.testing.assert_array_equal(again.transform(x, rows), fitted[entry.name].transform(x, rows))
    assert again.fingerprint() == fitted[entry.name].fingerprint()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_state_dict_round_trip_gives_identical_z(entry, data, fitted):
    x, y, W, b, rows = data
    original = fitted[entry.name]
    restored = make(entry, seed=3)
    restored.load_state_dict(original.state_dict())
    np.testing.assert_array_equal(restored.transform(x, rows), original.transform(x, rows))
    assert restored.fingerprint() == original.fingerprint()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_targets_sum_over_subclasses_to_the_teacher_class_probabilities(entry, data, fitted):
    x, y, W, b, rows = data
    z = torch.from_numpy(fitted[entry.name].transform(x, rows)).double()
    assert torch.isfinite(z).all()
    f = torch.from_numpy(x @ W.T + b)
    p = subclass_targets(f, z, tau=2.0, beta=0.7)
    np.testing.assert_allclose(p.sum(-1).numpy(), torch.softmax(f / 2.0, -1).numpy(), atol=1e-12)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_a_float32_memory_mapped_cache_fits_like_the_float64_rows(entry, data, fitted, tmp_path):
    x, y, W, b, rows = data
    np.save(tmp_path / "embedding.npy", x.astype(np.float32))
    cache = np.load(tmp_path / "embedding.npy", mmap_mode="r")  # what a TeacherCache hands over
    z = make(entry, seed=3).fit(cache, y, (W, b), rows=rows).transform(cache, rows)
    reference = fitted[entry.name].transform(x, rows)
    assert z.shape == reference.shape and np.isfinite(z).all()
    if entry.name in ("lelp", "pca", "random_projection", "kmeans", "gmm", "oracle", "random_split", "none"):
        np.testing.assert_allclose(z, reference, atol=2e-3 * max(1.0, np.abs(reference).max()))


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_more_subclasses_than_a_class_has_rows_is_refused_clearly(entry, data):
    x, y, W, b, _ = data
    S = make(entry).num_subclasses
    keep = (y != 1) | (np.cumsum(y == 1) <= S - 1)  # class 1 keeps S - 1 rows
    with pytest.raises(LelpError, match=f"class\\(es\\) \\[1\\] have \\[{S - 1}\\] training rows, "
                                        f"fewer than num_subclasses={S}"):
        make(entry).fit(x[keep], y[keep], (W, b), rows=rows_for(y[keep]))


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_get_params_round_trips_through_the_constructor(entry, fitted):
    """scikit-learn's get_params rule (its clone test): every ``__init__`` parameter is stored as an
    attribute of the same name, so the parameters read back rebuild an equally configured strategy."""
    names = set(inspect.signature(entry.cls.__init__).parameters) - {"self"}
    for strategy in (entry.cls(), make(entry, seed=3, chunk_size=50), fitted[entry.name]):
        params = strategy.get_params()
        assert set(params) == names
        rebuilt = type(strategy)(**params)
        assert rebuilt.get_params() == params and rebuilt.options() == strategy.options()
    assert make(entry, seed=3, chunk_size=50).get_params()["seed"] == 3
    # chunk_size changes how many rows are read at a time, not the fit: it is no part of the fingerprint
    assert entry.cls(chunk_size=50).fingerprint() == entry.cls().fingerprint()
    assert "chunk_size" not in entry.cls().options()
