"""Fashion-MNIST from the Debian package dataset-fashion-mnist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from lelp_lightning.core import Source, SplitData
from lelp_lightning.errors import LelpError
from lelp_lightning.sources.images import image_split, read_idx, stratified_subset

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


class FashionMNIST(Source):
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist``: 60k train / 10k test 28×28 images.

    ``binary=True`` labels an image by its class index % 2 (each class hides 5 clothing classes, kept as
    ``fine_labels``); ``binary=False`` keeps the 10 classes. The validation split (``val_size`` rows) is
    stratified by class out of the official training split; ``max_train`` / ``max_test`` take deterministic
    class-stratified subsets of the rest / of the official test split.
    """

    def __init__(self, binary: bool = True, val_size: int = 5000, max_train: int | None = None,
                 max_test: int | None = None, root: str = FASHION_MNIST_DIR, seed: int = 0):
        super().__init__(seed)
        self.binary = binary
        self.val_size = val_size
        self.max_train = max_train
        self.max_test = max_test
        self.root = str(root)

    @property
    def class_names(self) -> list[str]:
        return ["even_class", "odd_class"] if self.binary else list(FASHION_MNIST_CLASSES)

    def _read(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        files = [Path(self.root) / f"{part}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
        for file in files:
            if not file.is_file():
                raise LelpError(f"the Fashion-MNIST file {file} is missing; run `apt-get install -y "
                                "dataset-fashion-mnist` (or scripts/setup.sh) to install it.")
        return read_idx(files[0]), read_idx(files[1]).astype(np.int64)

    def _load(self) -> dict[str, SplitData]:
        images, fine = self._read("train")
        rest, val = train_test_split(np.arange(len(fine)), test_size=self.val_size, random_state=self.seed,
                                     stratify=fine)
        train = stratified_subset(rest, fine, self.max_train, self.seed)
        out = {"train": image_split("train", images, fine, train, self.binary),
               "val": image_split("val", images, fine, val, self.binary)}
        images, fine = self._read("t10k")
        test = stratified_subset(np.arange(len(fine)), fine, self.max_test, self.seed)
        # ids apart from train's
        out["test"] = image_split("test", images, fine, test, self.binary, id_offset=1_000_000)
        return out
