"""The pixel featuriser: images → the float tensors an image student reads."""

from __future__ import annotations

import numpy as np

from lelp_lightning.data.featurizers import DenseInputs, ExportSpec, Featurizer
from lelp_lightning.errors import LelpError
from lelp_lightning.sources.images import scale_pixels


class PixelFeaturizer(Featurizer):
    """Images as dense float32 student inputs: [N,1,H,W] for a CNN student, or [N,H·W] with ``flatten``
    for an MLP. ``image_shape`` (H, W) sizes the student (``input_dim`` = H·W) before the data is read;
    pixels are scaled to [0,1], then ``(x - mean) / std``."""

    kind = "pixels"

    def __init__(self, image_shape: tuple[int, int] = (28, 28), flatten: bool = False, mean: float = 0.0,
                 std: float = 1.0):
        if len(image_shape) != 2 or min(image_shape) < 1:
            raise LelpError(f"PixelFeaturizer.image_shape must be [height, width], got {image_shape}.")
        if not std > 0:
            raise LelpError(f"PixelFeaturizer.std must be > 0, got {std}.")
        self.image_shape = [int(s) for s in image_shape]
        self.flatten = flatten
        self.mean = float(mean)
        self.std = float(std)

    @property
    def input_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def transform(self, images: np.ndarray) -> DenseInputs:
        if not isinstance(images, np.ndarray) or images.ndim != 3 or list(images.shape[1:]) != self.image_shape:
            got = f"images of shape {list(images.shape[1:])}" if isinstance(images, np.ndarray) else "texts"
            raise LelpError(f"PixelFeaturizer(image_shape={self.image_shape}) got {got}; set "
                            "data.featurizer.init_args.image_shape to the source's [height, width].")
        x = scale_pixels(images, self.mean, self.std)
        return DenseInputs(x.reshape(len(x), -1) if self.flatten else x)

    def export_spec(self) -> ExportSpec:
        """Scaled floats into the graph; the scaling runs outside, in numpy (``featurizer.json``)."""
        return ExportSpec({"kind": self.kind, "image_shape": self.image_shape, "flatten": self.flatten,
                           "mean": self.mean, "std": self.std,
                           "scaling": "uint8 pixels / 255, then (x - mean) / std; shape [N,1,H,W], or [N,H·W] when "
                                      "flatten",
                           "inputs": ["pixels"]}, {"pixels": {0: "batch"}})
