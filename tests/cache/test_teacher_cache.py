"""TeacherCache: round trip, resume without redoing rows, nothing unfinished or corrupted read back."""

import json

import numpy as np
import pytest
from helpers import TINY_TEACHER, tiny_teacher, tiny_tweets

from lelp_lightning.cache import PassTarget, TeacherCache, build_entry
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.errors import LelpError
from lelp_lightning.sources import Tweets
from lelp_lightning.strategies import LinearProjectionStrategy
from lelp_lightning.teachers import SentenceEncoderTeacher

N, D, C = 23, 5, 2
rng = np.random.default_rng(0)
EMB = rng.normal(size=(N, D)).astype(np.float32)
LOGITS = rng.normal(size=(N, C)).astype(np.float32)
LABELS = rng.integers(0, C, N)
W, B = rng.normal(size=(C, D)).astype(np.float32), rng.normal(size=C).astype(np.float32)


ORDER = np.arange(N)[::-1]  # a fixed, non-trivial order (like length buckets)
BLOCK = 4  # 6 blocks, the last one short


def target(seen, fail_after=None, order=ORDER, row_ids=None, meta=None, emb=EMB):
    """The entry's build: ``encode`` records the rows it encodes; it raises on its ``fail_after``-th block."""
    calls = [0]

    def encode(index):
        if calls[0] == fail_after:
            raise KeyboardInterrupt("killed")
        calls[0] += 1
        seen.extend(index.tolist())
        return emb[index], LOGITS[index]

    return PassTarget(key="k", labels=LABELS, row_ids=np.arange(N) + 100 if row_ids is None else row_ids,
                      embedding_dim=D, num_classes=C,
                      meta={"what": "test"} if meta is None else meta, order=order, block_size=BLOCK, encode=encode,
                      classifier=lambda: (W, B))


def build(cache, seen, **kwargs):
    return build_entry(cache, target(seen, **kwargs), progress=False)


def logged_blocks(folder):
    """The block numbers in a build folder's block logs (whole lines only)."""
    return {int(line) for log in folder.glob("blocks-rank*.log") for line in log.read_text().splitlines()}


def test_round_trip(tmp_path):
    cache = TeacherCache(tmp_path)
    seen = []
    entry = build(cache, seen)
    assert sorted(seen) == list(range(N))
    again = TeacherCache(tmp_path).open("k")
    np.testing.assert_array_equal(again.embedding, EMB)
    np.testing.assert_array_equal(again.logits, LOGITS)
    np.testing.assert_array_equal(again.label, LABELS)
    np.testing.assert_array_equal(again.row_id, np.arange(N) + 100)
    np.testing.assert_array_equal(again.W, W)
    assert isinstance(again.embedding, np.memmap)
    assert again.manifest["meta"] == {"what": "test"} == entry.manifest["meta"]
    seen_again = []
    assert build(cache, seen_again).manifest == entry.manifest and seen_again == []  # a finished entry is reused


def test_interrupted_build_is_not_complete_and_resumes_without_redoing_rows(tmp_path):
    """The teacher fails in its 4th block: the 3 finished blocks are synced and logged on the way out (the
    writer is closed in a ``finally``) and the next build encodes only the rows of the other blocks."""
    cache = TeacherCache(tmp_path)
    first = []
    with pytest.raises(KeyboardInterrupt):
        build(cache, first, fail_after=3)
    assert len(first) == 12
    assert logged_blocks(tmp_path / "k.partial") == {0, 1, 2}
    assert not cache.exists("k")
    with pytest.raises(LelpError, match="missing or unfinished"):
        cache.open("k")
    second = []
    entry = build(cache, second)
    assert set(first).isdisjoint(second) and sorted(first + second) == list(range(N))
    assert set(first) == set(ORDER[:3 * BLOCK].tolist())  # exactly the rows of the logged blocks were kept
    np.testing.assert_array_equal(entry.embedding, EMB)
    np.testing.assert_array_equal(entry.logits, LOGITS)


@pytest.mark.parametrize("change", [{"meta": {"what": "other"}, "row_ids": np.arange(N)},
                                    {"order": np.arange(N)}])
def test_partial_build_with_another_description_starts_over(tmp_path, change):
    """A partial build of other metadata (other fingerprints) or another row order is not resumed."""
    cache = TeacherCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        build(cache, [], fail_after=2)
    assert logged_blocks(tmp_path / "k.partial") == {0, 1}
    seen = []
    entry = build(cache, seen, **change)
    assert sorted(seen) == list(range(N))
    np.testing.assert_array_equal(entry.row_id, change.get("row_ids", np.arange(N) + 100))
    assert entry.manifest["meta"] == change.get("meta", {"what": "test"})
    np.testing.assert_array_equal(TeacherCache(tmp_path).open("k").embedding, EMB)


def test_corrupted_array_fails_its_checksum(tmp_path):
    cache = TeacherCache(tmp_path)
    build(cache, [])
    path = tmp_path / "k" / "embedding.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(LelpError, match="checksum"):
        cache.open("k")


def test_manifest_is_written_last(tmp_path, monkeypatch):
    """When manifest.json is written the classifier is on disk and the block logs cover every block; the
    finished entry then holds neither the block logs nor build.json, and no partial folder is left."""
    from lelp_lightning import fileio

    cache = TeacherCache(tmp_path)
    real = fileio.atomic_write_json
    written = []

    def guarded(path, payload, **dumps):
        if path.name == "manifest.json":
            assert (path.parent / "classifier.npz").is_file()
            assert logged_blocks(path.parent) == set(range(6))
            assert (path.parent / "build.json").is_file()
        written.append(path.name)
        real(path, payload, **dumps)

    monkeypatch.setattr(fileio, "atomic_write_json", guarded)
    build(cache, [])
    assert written == ["build.json", "manifest.json"]
    assert json.loads((tmp_path / "k" / "manifest.json").read_text())["arrays"]["embedding"]["shape"] == [N, D]
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "classifier.npz", "embedding.npy", "label.npy", "logits.npy", "manifest.json", "row_id.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.lock", "k"]  # the build's (empty) lock file stays


def test_nan_teacher_output_is_refused(tmp_path):
    bad = EMB.copy()
    bad[ORDER[5], 0] = np.nan  # a row of the second block
    seen = []
    with pytest.raises(LelpError, match="NaN or Inf"):
        build(TeacherCache(tmp_path), seen, emb=bad)
    assert not TeacherCache(tmp_path).exists("k")
    assert logged_blocks(tmp_path / "k.partial") == {0}  # the NaN block is neither kept nor logged


def test_fingerprint_changes_with_teacher_data_and_split_and_a_changed_one_reruns(tweets_cache_dir):
    def key(source=None, teacher=None, split="train"):
        dm = DistillDataModule(source or tiny_tweets(), teacher or tiny_teacher(), LinearProjectionStrategy(2),
                               cache_dir=str(tweets_cache_dir))
        return dm.plan.key(split)

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
    return dict(TINY_TEACHER)


def test_a_cache_dir_that_is_a_file_or_a_broken_link_is_one_sentence(tmp_path):
    """Before: FileExistsError from mkdir deep inside `lelp tune`; now the cache says what is wrong."""
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(LelpError, match=r"the cache folder .*a_file is a file; point data.cache_dir at a folder\.$"):
        TeacherCache(tmp_path / "a_file")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(LelpError, match=r"the cache folder .*link is a broken symbolic link \(to .*gone\); point "
                                        r"data.cache_dir at a folder, or remove the link\.$"):
        TeacherCache(tmp_path / "link")
    assert TeacherCache(tmp_path / "new").root == tmp_path / "new"  # a folder yet to be made is fine
