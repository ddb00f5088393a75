"""Image tasks: IDX parsing, the Fashion-MNIST and digits sources, pixels, the CNN teacher, `lelp fit` on digits."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, run_lelp, write_logger_config

from lelp_lightning.cache import TeacherCache
from lelp_lightning.data.pixels import PixelFeaturizer
from lelp_lightning.errors import LelpError
from lelp_lightning.sources import Digits, FashionMNIST
from lelp_lightning.sources.fashion_mnist import FASHION_MNIST_DIR
from lelp_lightning.sources.images import read_idx
from lelp_lightning.students import CNNStudent, students
from lelp_lightning.teachers import CNNTeacher

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


def test_cnn_student_reads_images_and_flat_pixels():
    assert "cnn" in students and students.get("cnn") is CNNStudent
    net = CNNStudent(input_dim=64, num_outputs=6, channels=[4, 8])
    x = torch.rand(5, 1, 8, 8)
    assert net(x).shape == (5, 6) and net.embed(x).shape == (5, net.embedding_dim) == (5, 8 * 2 * 2)
    torch.testing.assert_close(net(x.reshape(5, 64)), net(x))
    torch.testing.assert_close(net(x), net.head(net.embed(x)))
    with pytest.raises(LelpError, match="square"):
        CNNStudent(input_dim=60, num_outputs=2)


TINY_CNN = {"channels": [8, 16], "hidden": 32, "epochs": 8, "lr": 3e-3, "train_batch_size": 64}


def test_cnn_teacher_fit_is_deterministic_cached_and_linear_in_its_embedding(tmp_path, monkeypatch):
    source = Digits()
    test = source.split("test")
    first = CNNTeacher(**TINY_CNN, seed=1)
    first.fit(source, TeacherCache(tmp_path / "a"))
    again = CNNTeacher(**TINY_CNN, seed=1)
    again.fit(source, TeacherCache(tmp_path / "b"))  # another cache: trained again, from scratch
    emb, logits = first.encode(test.texts)
    np.testing.assert_array_equal(again.encode(test.texts)[1], logits)
    W, b = first.classifier()
    assert W.shape == (2, 32) and emb.shape == (len(test), 32)
    np.testing.assert_allclose(logits, emb @ W.T + b, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(1) == test.labels).mean() > 0.85
    other = CNNTeacher(**TINY_CNN, seed=2)
    other.fit(source, TeacherCache(tmp_path / "a"))
    assert not np.array_equal(other.classifier()[0], W)
    # a second run on the same cache loads the saved weights and never trains
    monkeypatch.setattr(CNNTeacher, "_train", lambda *a: pytest.fail("the CNN teacher trained again"))
    loaded = CNNTeacher(**TINY_CNN, seed=1)
    loaded.fit(source, TeacherCache(tmp_path / "a"))
    np.testing.assert_array_equal(loaded.encode(test.texts)[1], logits)
    np.testing.assert_array_equal(loaded.encode_rows(test, np.arange(100, len(test)))[1], logits[100:])


def test_cnn_teacher_trains_on_the_labeled_rows_only(tmp_path, monkeypatch):
    source = Digits()
    seen = {}
    monkeypatch.setattr(CNNTeacher, "_train", lambda self, images, labels: seen.update(n=len(labels)))
    labeled = np.arange(0, 1000, 10)
    CNNTeacher(**TINY_CNN).fit(source, TeacherCache(tmp_path), labeled=labeled)
    assert seen["n"] == 100
    CNNTeacher(**TINY_CNN).fit(source, TeacherCache(tmp_path))  # all rows: another weights file
    assert seen["n"] == 1000 and len(list(tmp_path.glob("cnn-*.pt"))) == 2


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digits-cache")


@pytest.mark.parametrize("student, strategy", [("mlp", "lelp.yaml"), ("cnn", "oracle.yaml")])
def test_lelp_fit_on_digits_with_the_cnn_teacher(student, strategy, digits_cache, tmp_path):
    logs = write_logger_config(tmp_path, wandb=False)
    proc = run_lelp("fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "experiments/digits.yaml"),
                    "--config", str(CONFIGS / "strategy" / strategy), "--config", str(CONFIGS / f"student/{student}.yaml"),
                    "--config", str(logs), "--data.cache_dir", str(digits_cache), "--data.progress", "false",
                    "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
                    "--trainer.enable_model_summary", "false", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["config"]["model"]["student"]["class_path"].endswith(
        {"mlp": "MLPStudent", "cnn": "CNNStudent"}[student])
    assert summary["config"]["data"]["teacher"]["class_path"].endswith("CNNTeacher")
    majority = summary["majority_class_rate"]
    assert summary["teacher"]["test_accuracy"] > 0.9
    assert summary["student"]["test_accuracy"] > majority + 0.1, summary
