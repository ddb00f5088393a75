"""Image sources: IDX parsing, Fashion-MNIST and digits (stratified splits, binarised, fine labels)."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from lelp_lightning.errors import LelpError
from lelp_lightning.sources import Digits, FashionMNIST
from lelp_lightning.sources.fashion_mnist import FASHION_MNIST_DIR
from lelp_lightning.sources.images import read_idx

needs_fashion_mnist = pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(),
                                         reason="dataset-fashion-mnist is not installed (scripts/setup.sh installs it)")


def idx_bytes(code: int, shape: tuple, payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape) + payload


def test_read_idx_parses_hand_built_files(tmp_path):
    pixels = bytes(range(12))
    (tmp_path / "images").write_bytes(idx_bytes(0x08, (2, 3, 2), pixels))
    assert read_idx(tmp_path / "images").tolist() == [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]
    with gzip.open(tmp_path / "labels.gz", "wb") as f:  # big-endian int32, gzipped
        f.write(idx_bytes(0x0C, (3,), struct.pack(">iii", 7, -1, 70000)))
    labels = read_idx(tmp_path / "labels.gz")
    assert labels.tolist() == [7, -1, 70000] and labels.dtype == np.int32
    (tmp_path / "short").write_bytes(idx_bytes(0x08, (2, 3, 2), pixels[:-1]))
    with pytest.raises(LelpError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "text").write_bytes(b"label,text\n")
    with pytest.raises(LelpError, match="not an IDX file"):
        read_idx(tmp_path / "text")


@needs_fashion_mnist
def test_fashion_mnist_official_splits_binarised_with_fine_labels():
    source = FashionMNIST(seed=0)
    train, val, test = (source.split(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    assert train.texts.shape == (55_000, 28, 28) and train.texts.dtype == np.uint8
    assert source.num_classes == 2
    images = read_idx(Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz")
    originals = read_idx(Path(FASHION_MNIST_DIR) / "train-labels-idx1-ubyte.gz")
    assert sorted(np.concatenate([train.row_ids, val.row_ids]).tolist()) == list(range(60_000))
    for split in (train, val):
        np.testing.assert_array_equal(split.fine_labels, originals[split.row_ids])
        np.testing.assert_array_equal(split.texts, images[split.row_ids])
    test_originals = read_idx(Path(FASHION_MNIST_DIR) / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(test.fine_labels, test_originals[test.row_ids - 1_000_000])
    for split in (train, val, test):
        np.testing.assert_array_equal(split.labels, split.fine_labels % 2)
    assert np.bincount(val.fine_labels).tolist() == [500] * 10  # stratified by the original class
    ten = FashionMNIST(binary=False, max_train=2000, max_test=500)
    small = ten.split("train")
    assert ten.num_classes == 10 and len(small) == 2000 and len(ten.split("test")) == 500
    np.testing.assert_array_equal(small.labels, small.fine_labels)
    assert np.bincount(small.labels).tolist() == [200] * 10
    assert small.fingerprint() == FashionMNIST(binary=False, max_train=2000, max_test=500).split("train").fingerprint()


def test_fashion_mnist_missing_files_name_the_debian_package(tmp_path):
    with pytest.raises(LelpError, match=r"apt-get install -y dataset-fashion-mnist"):
        FashionMNIST(root=str(tmp_path)).split("train")


def test_digits_stratified_split_binarised_with_fine_labels():
    from sklearn.datasets import load_digits

    source = Digits()
    splits = [source.split(s) for s in ("train", "val", "test")]
    assert [len(s) for s in splits] == [1000, 300, 497]
    digits = load_digits()
    assert sorted(np.concatenate([s.row_ids for s in splits]).tolist()) == list(range(1797))
    for split in splits:
        assert split.texts.shape[1:] == (8, 8) and split.texts.dtype == np.uint8
        np.testing.assert_array_equal(split.fine_labels, digits.target[split.row_ids])
        np.testing.assert_array_equal(split.labels, split.fine_labels % 2)
        np.testing.assert_array_equal(split.texts.astype(int), np.round(digits.images[split.row_ids] * 255 / 16))
        assert set(split.fine_labels.tolist()) == set(range(10))
    assert Digits(binary=False).num_classes == 10


def test_split_fingerprint_hashes_the_pixels():
    split = Digits().split("train")
    before = split.fingerprint()
    split.texts = split.texts.copy()
    assert split.fingerprint() == before
    split.texts[0, 0, 0] ^= 1
    assert split.fingerprint() != before
