"""The block-wise cache build, with simulated ranks (one process): what TeacherPass does across processes."""

import numpy as np
import pytest

from lelp_lightning.cache import BlockBuild, PassTarget, TeacherCache, build_entry
from lelp_lightning.errors import LelpError

N, D, C = 29, 6, 3
rng = np.random.default_rng(0)
EMB = rng.normal(size=(N, D)).astype(np.float32)
LOGITS = rng.normal(size=(N, C)).astype(np.float32)
LABELS = rng.integers(0, C, N)
ORDER = rng.permutation(N)  # a fixed, scattered order, like length buckets
W, B = rng.normal(size=(C, D)).astype(np.float32), rng.normal(size=C).astype(np.float32)


def target(encoded=None):
    def encode(index):
        if encoded is not None:
            encoded.extend(index.tolist())
        return EMB[index], LOGITS[index]
    return PassTarget(key="k", labels=LABELS, row_ids=np.arange(N) + 7, embedding_dim=D, num_classes=C,
                      meta={"what": "blocks"}, order=ORDER, block_size=4, encode=encode, classifier=lambda: (W, B))


def run_ranks(build, world, ranks=None):
    """What TeacherPass does: pending blocks round robin over ``world`` processes; only ``ranks`` run."""
    pending = [b for b in range(build.target.num_blocks) if b not in build.done_blocks()]
    for rank in range(world) if ranks is None else ranks:
        writer = build.writer(rank, sync_seconds=0.0)
        for block in pending[rank::world]:
            writer.write(block, *build.target.encode(build.target.block(block)))
        writer.close()


def test_two_writers_build_what_one_process_builds(tmp_path):
    build = BlockBuild(TeacherCache(tmp_path / "blocks"), target())
    build.prepare()
    run_ranks(build, 2, ranks=(1, 0))
    entry = build.finish()
    encoded = []
    reference = build_entry(TeacherCache(tmp_path / "single"), target(encoded), progress=False)  # one process
    assert sorted(encoded) == list(range(N))
    for name in ("embedding", "logits", "label", "row_id", "W", "b"):
        np.testing.assert_array_equal(getattr(entry, name), getattr(reference, name))
    assert entry.manifest["arrays"] == reference.manifest["arrays"]  # same checksums
    assert entry.manifest == reference.manifest
    for folder in ("blocks", "single"):
        left = [p.name for p in (tmp_path / folder).iterdir() if p.suffix != ".lock"]  # (build_entry's lock file)
        assert left == ["k"]  # no partial folder left behind


def test_a_killed_build_resumes_with_another_process_count_without_redoing_logged_blocks(tmp_path):
    cache = TeacherCache(tmp_path)
    first = []
    build = BlockBuild(cache, target(first))
    build.prepare()
    run_ranks(build, 2, ranks=(0,))  # rank 0 finished its share; rank 1 was killed before writing anything
    writer = build.writer(1, sync_seconds=3600.0)  # rank 1 wrote one block but died before syncing its log
    writer.write(1, *build.target.encode(build.target.block(1)))
    with open(build.partial / "blocks-rank1.log", "a") as log:
        log.write("3")  # a torn line from the kill
    assert not cache.exists("k")
    done = build.done_blocks()
    assert done == set(range(0, build.target.num_blocks, 2))

    second = []
    resumed = BlockBuild(cache, target(second))
    resumed.prepare()  # same description: the partial build is kept
    assert resumed.done_blocks() == done
    run_ranks(resumed, 3)
    entry = resumed.finish()
    logged_rows = {i for b in done for i in ORDER[b * 4: b * 4 + 4]}
    assert logged_rows.isdisjoint(second) and sorted(second) == sorted(set(range(N)) - logged_rows)
    np.testing.assert_array_equal(entry.embedding, EMB)
    np.testing.assert_array_equal(entry.logits, LOGITS)


def test_a_torn_log_line_never_runs_into_the_next_logged_block(tmp_path):
    """A kill mid-write leaves a torn last line ("1" of "1\\n"); the writer appending to that log next must not
    make it "11\\n", which would log block 11 (never written) as done and seal its rows as zeros."""
    wide = PassTarget(key="k", labels=LABELS, row_ids=np.arange(N), embedding_dim=D, num_classes=C, meta={},
                      order=ORDER, block_size=2, encode=lambda index: (EMB[index], LOGITS[index]),
                      classifier=lambda: (W, B))
    assert wide.num_blocks == 15
    cache = TeacherCache(tmp_path)
    build = BlockBuild(cache, wide)
    build.prepare()
    writer = build.writer(0, sync_seconds=0.0)
    for block in (0, 1):
        writer.write(block, *wide.encode(wide.block(block)))
    (build.partial / "blocks-rank0.log").write_text("0\n1")  # killed while logging block 1
    assert build.done_blocks() == {0}
    resumed = BlockBuild(cache, wide)
    resumed.prepare()
    writer = resumed.writer(0, sync_seconds=0.0)  # the resumed build logs block 1, then is killed
    writer.write(1, *wide.encode(wide.block(1)))
    assert resumed.done_blocks() == {0, 1}
    entry = build_entry(cache, wide, progress=False)
    np.testing.assert_array_equal(entry.embedding, EMB)
    np.testing.assert_array_equal(entry.logits, LOGITS)


def test_a_partial_build_of_another_block_layout_starts_over(tmp_path):
    cache = TeacherCache(tmp_path)
    build = BlockBuild(cache, target())
    build.prepare()
    run_ranks(build, 2, ranks=(0,))
    changed = target()
    changed.block_size = 5
    BlockBuild(cache, changed).prepare()
    assert BlockBuild(cache, changed).done_blocks() == set()


def test_sealing_with_blocks_missing_is_an_error_and_nothing_is_readable(tmp_path):
    cache = TeacherCache(tmp_path)
    build = BlockBuild(cache, target())
    build.prepare()
    run_ranks(build, 2, ranks=(0,))
    with pytest.raises(LelpError, match=r"left 4 of 8 blocks unwritten; run `lelp cache` again"):
        build.finish()
    assert not cache.exists("k")


def test_non_finite_teacher_outputs_are_refused(tmp_path):
    build = BlockBuild(TeacherCache(tmp_path), target())
    build.prepare()
    writer = build.writer(0)
    bad = EMB[build.target.block(0)].copy()
    bad[0, 0] = np.nan
    with pytest.raises(LelpError, match="NaN or Inf"):
        writer.write(0, bad, LOGITS[build.target.block(0)])
