"""TeacherCache: round trip, resume without redoing rows, nothing unfinished or corrupted read back."""

import json

import numpy as np
import pytest

from conftest import tiny_teacher, tiny_tweets
from lelp_lightning.cache import TeacherCache
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.data.sources import Tweets
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import LinearProjectionStrategy
from lelp_lightning.teachers import SentenceEncoderTeacher

N, D, C = 23, 5, 2
rng = np.random.default_rng(0)
EMB = rng.normal(size=(N, D)).astype(np.float32)
LOGITS = rng.normal(size=(N, C)).astype(np.float32)
LABELS = rng.integers(0, C, N)
W, B = rng.normal(size=(C, D)).astype(np.float32), rng.normal(size=C).astype(np.float32)


def make_batches(seen, fail_after=None, order=None):
    order = np.arange(N)[::-1] if order is None else order  # a fixed, non-trivial order (like length buckets)

    def batches(done):
        for k, lo in enumerate(range(done, N, 4)):
            if fail_after is not None and k == fail_after:
                raise KeyboardInterrupt("killed")
            index = order[lo: lo + 4]
            seen.extend(index.tolist())
            yield index, EMB[index], LOGITS[index]
    return batches


def build(cache, batches, key="k"):
    return cache.build(key, labels=LABELS, row_ids=np.arange(N) + 100, embedding_dim=D, num_classes=C,
                       batches=batches, classifier=lambda: (W, B), meta={"what": "test"}, progress=False)


def test_round_trip(tmp_path):
    cache = TeacherCache(tmp_path)
    seen = []
    entry = build(cache, make_batches(seen))
    assert sorted(seen) == list(range(N))
    again = TeacherCache(tmp_path).open("k")
    np.testing.assert_array_equal(again.embedding, EMB)
    np.testing.assert_array_equal(again.logits, LOGITS)
    np.testing.assert_array_equal(again.label, LABELS)
    np.testing.assert_array_equal(again.row_id, np.arange(N) + 100)
    np.testing.assert_array_equal(again.W, W)
    assert isinstance(again.embedding, np.memmap)
    assert again.manifest["meta"] == {"what": "test"} == entry.manifest["meta"]


def test_interrupted_build_is_not_complete_and_resumes_without_redoing_rows(tmp_path):
    cache = TeacherCache(tmp_path)
    first = []
    with pytest.raises(KeyboardInterrupt):
        build(cache, make_batches(first, fail_after=3))
    assert len(first) == 12
    assert not cache.exists("k")
    with pytest.raises(LelpError, match="missing or unfinished"):
        cache.open("k")
    second = []
    entry = build(cache, make_batches(second))
    assert set(first).isdisjoint(second) and sorted(first + second) == list(range(N))
    np.testing.assert_array_equal(entry.embedding, EMB)


def test_partial_build_with_other_shapes_starts_over(tmp_path):
    cache = TeacherCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        build(cache, make_batches([], fail_after=2))
    seen = []
    cache.build("k", labels=LABELS, row_ids=np.arange(N), embedding_dim=D, num_classes=C, batches=make_batches(seen),
                classifier=lambda: (W, B), meta={"what": "other"}, progress=False)
    assert sorted(seen) == list(range(N))


def test_corrupted_array_fails_its_checksum(tmp_path):
    cache = TeacherCache(tmp_path)
    build(cache, make_batches([]))
    path = tmp_path / "k" / "embedding.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(LelpError, match="checksum"):
        cache.open("k")


def test_manifest_is_written_last(tmp_path, monkeypatch):
    import lelp_lightning.cache.teacher_cache as tc

    cache = TeacherCache(tmp_path)
    real = tc._atomic_write_json

    def guarded(path, payload):
        if path.name == "manifest.json":
            assert (path.parent / "classifier.npz").is_file()
            assert json.loads((path.parent / "progress.json").read_text()) == {"rows_done": N}
        real(path, payload)

    monkeypatch.setattr(tc, "_atomic_write_json", guarded)
    build(cache, make_batches([]))
    assert json.loads((tmp_path / "k" / "manifest.json").read_text())["arrays"]["embedding"]["shape"] == [N, D]
    assert not (tmp_path / "k" / "progress.json").exists()


def test_nan_teacher_output_is_refused(tmp_path):
    def bad(done):
        e = EMB[:4].copy(); e[0, 0] = np.nan
        yield np.arange(4), e, LOGITS[:4]
    with pytest.raises(LelpError, match="NaN or Inf"):
        build(TeacherCache(tmp_path), bad)


def test_fingerprint_changes_with_teacher_data_and_split_and_a_changed_one_reruns(tweets_cache_dir):
    def key(source=None, teacher=None, split="train"):
        dm = DistillDataModule(source or tiny_tweets(), teacher or tiny_teacher(), LinearProjectionStrategy(2),
                               cache_dir=str(tweets_cache_dir))
        return dm.cache_key(split)

    base = key()
    assert base == key()  # stable across instances
    assert key(split="val") != base
    assert key(source=Tweets(num_classes=2, max_rows=301)) != base
    assert key(source=Tweets(num_classes=2, max_rows=300, seed=1)) != base
    other_teacher = SentenceEncoderTeacher(**{**_teacher_opts(), "head_epochs": 6})
    assert key(teacher=other_teacher) != base
    assert key(teacher=SentenceEncoderTeacher(**{**_teacher_opts(), "max_length": 32})) != base
    assert TeacherCache(tweets_cache_dir).exists(base)
    assert not TeacherCache(tweets_cache_dir).exists(key(teacher=other_teacher))


def _teacher_opts():
    from conftest import TINY_TEACHER
    return dict(TINY_TEACHER)
