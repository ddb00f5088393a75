"""scikit-learn's 8×8 digits: a tiny real image set for tests."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from lelp_lightning.core import Source, SplitData
from lelp_lightning.errors import LelpError
from lelp_lightning.sources.images import image_split


class Digits(Source):
    """scikit-learn's 1,797 8×8 digits (pixels 0–16 rescaled to 0–255), a stratified train/val/test split.

    ``binary=True`` labels a digit by its value % 2 (the digits kept as ``fine_labels``); tiny, for tests.
    ``train_size`` / ``val_size`` rows are drawn stratified by digit under ``seed``; the rest is the test split.
    """

    def __init__(self, binary: bool = True, train_size: int = 1000, val_size: int = 300, seed: int = 0):
        super().__init__(seed)
        if train_size < 10 or val_size < 10 or train_size + val_size > 1797 - 10:
            raise LelpError(f"Digits needs train_size, val_size >= 10 and at least 10 test rows of 1797, got "
                            f"train_size={train_size}, val_size={val_size}.")
        self.binary = binary
        self.train_size = train_size
        self.val_size = val_size

    @property
    def class_names(self) -> list[str]:
        return ["even", "odd"] if self.binary else [str(d) for d in range(10)]

    def _load(self) -> dict[str, SplitData]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)
        fine = digits.target.astype(np.int64)
        idx = np.arange(len(fine))
        train, rest = train_test_split(idx, train_size=self.train_size, random_state=self.seed, stratify=fine)
        val, test = train_test_split(rest, train_size=self.val_size, random_state=self.seed, stratify=fine[rest])
        return {name: image_split(name, images, fine, ids, self.binary)
                for name, ids in (("train", train), ("val", val), ("test", test))}
