"""The ensemble of random projections: each member's block is the log-softmax of a random projection's z."""

import numpy as np
import pytest
from helpers import gaussian_classes
from scipy.special import log_softmax, softmax

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import RandomProjectionEnsembleStrategy, RandomProjectionStrategy


@pytest.mark.parametrize(("members", "member_beta"), [(3, 1.0), (2, 0.5)])
def test_ensemble_blocks_are_log_probabilities_of_the_same_random_projections(members, member_beta):
    x, y, W, b = gaussian_classes(dim=12, num_classes=3)
    ensemble = RandomProjectionEnsembleStrategy(num_subclasses=2 * members, num_projections=members,
                                                member_beta=member_beta, seed=5).fit(x, y, (W, b))
    single = RandomProjectionStrategy(num_subclasses=2 * members, seed=5).fit(x, y, (W, b))
    z = ensemble.transform(x)
    assert z.shape == (len(x), 3, 2 * members) and ensemble.num_subclasses == 2 * members
    blocks = single.transform(x).astype(np.float64).reshape(len(x), 3, members, 2) / member_beta
    np.testing.assert_allclose(z.reshape(len(x), 3, members, 2), log_softmax(blocks, axis=-1), atol=1e-5)
    # softmax over all M·2 entries (the objective at β = 1) is the members' mixture, each at weight 1/M
    mixture = softmax(z.astype(np.float64), axis=-1).reshape(len(x), 3, members, 2)
    np.testing.assert_allclose(mixture.sum(-1), np.full((len(x), 3, members), 1 / members), atol=1e-6)
    again = RandomProjectionEnsembleStrategy(**ensemble.get_params())
    again.load_state_dict(ensemble.state_dict())
    np.testing.assert_array_equal(again.transform(x), z)


def test_ensemble_options_are_checked():
    with pytest.raises(LelpError, match="a multiple of num_projections"):
        RandomProjectionEnsembleStrategy(num_subclasses=6, num_projections=4)
    with pytest.raises(LelpError, match="S / M >= 2"):
        RandomProjectionEnsembleStrategy(num_subclasses=4, num_projections=4)
