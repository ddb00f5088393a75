"""Image sources (Fashion-MNIST, scikit-learn's digits) and the pixel featuriser for students.

An image split keeps its rows in ``SplitData.texts`` as a uint8 array [N,H,W] (the raw inputs, like the
strings of a text split); :func:`scale_pixels` is the one place where pixels become floats. Both sources
binarise by ``label % 2`` and keep the original classes as ``fine_labels`` (the oracle's subclasses).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from lelp_lightning.data.featurizers import DenseInputs, Featurizer
from lelp_lightning.data.sources import SplitData, TextSource
from lelp_lightning.errors import LelpError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (gzipped or not): 2 zero bytes, a dtype code, the number of dimensions, the
    big-endian uint32 sizes, then the values."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise LelpError(f"{path} is not an IDX file; expected two zero bytes and a known dtype code first.")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise LelpError(f"{path} holds {len(raw) - offset} data bytes but its header announces shape {shape} "
                        f"of {dtype}; the file is truncated or corrupt.")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def scale_pixels(images: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """uint8 images [N,H,W] → float32 [N,1,H,W]: pixels in [0,1], then ``(x - mean) / std``."""
    x = images.astype(np.float32)[:, None] / np.float32(255)
    return (x - np.float32(mean)) / np.float32(std) if (mean, std) != (0.0, 1.0) else x


def _split(name: str, images: np.ndarray, fine: np.ndarray, ids: np.ndarray, binary: bool,
           id_offset: int = 0) -> SplitData:
    ids = np.sort(ids)
    return SplitData(name=name, texts=np.ascontiguousarray(images[ids]),
                     labels=(fine[ids] % 2 if binary else fine[ids]).astype(np.int64),
                     row_ids=ids.astype(np.int64) + id_offset, fine_labels=fine[ids].astype(np.int64))


def _subset(ids: np.ndarray, fine: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A deterministic subset of ``size`` rows stratified by fine label (all rows when ``size`` is None)."""
    if size is None or size >= len(ids):
        return ids
    return train_test_split(ids, train_size=size, random_state=seed, stratify=fine[ids])[0]


class FashionMNIST(TextSource):
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
        out = {"train": _split("train", images, fine, _subset(rest, fine, self.max_train, self.seed), self.binary),
               "val": _split("val", images, fine, val, self.binary)}
        images, fine = self._read("t10k")
        test = _subset(np.arange(len(fine)), fine, self.max_test, self.seed)
        out["test"] = _split("test", images, fine, test, self.binary, id_offset=1_000_000)  # ids apart from train's
        return out


class Digits(TextSource):
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
        return {name: _split(name, images, fine, ids, self.binary)
                for name, ids in (("train", train), ("val", val), ("test", test))}


class PixelFeaturizer(Featurizer):
    """Images as dense float32 student inputs: [N,1,H,W] for a CNN student, or [N,H·W] with ``flatten``
    for an MLP. ``image_shape`` (H, W) sizes the student (``input_dim`` = H·W) before the data is read;
    pixels are scaled to [0,1], then ``(x - mean) / std``."""

    def __init__(self, image_shape: list[int] = [28, 28], flatten: bool = False, mean: float = 0.0,
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
