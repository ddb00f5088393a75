"""PixelFeaturizer: images to the unit range, as NCHW or flat rows."""

import numpy as np
import pytest
import torch

from lelp_lightning.data.pixels import PixelFeaturizer
from lelp_lightning.errors import LelpError
from lelp_lightning.sources import Digits


def test_pixel_featurizer_scales_to_unit_range_and_flattens():
    images = Digits().split("val").texts
    nchw = PixelFeaturizer([8, 8]).transform(images)
    batch = nchw.gather(np.array([3, 1]))
    assert batch.shape == (2, 1, 8, 8) and batch.dtype == torch.float32
    np.testing.assert_allclose(batch.numpy()[:, 0], images[[3, 1]] / 255.0, rtol=1e-6)
    flat = PixelFeaturizer([8, 8], flatten=True, mean=0.5, std=0.5)
    assert flat.input_dim == 64
    np.testing.assert_allclose(flat.transform(images).gather(np.array([3])).numpy(),
                               (images[[3]].reshape(1, 64) / 255.0 - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    with pytest.raises(LelpError, match="image_shape"):
        PixelFeaturizer([28, 28]).transform(images)
