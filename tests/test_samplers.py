"""Process-count-independent samplers, with simulated ranks (one process)."""

import pytest

from lelp_lightning.errors import LelpError
from lelp_lightning.samplers import EvalShardSampler, GlobalBatchSampler


def batches(sampler) -> list[list[int]]:
    out = [b.tolist() for b in sampler]
    assert len(out) == len(sampler)
    return out


@pytest.mark.parametrize(("n", "batch", "world"), [(61, 8, 2), (61, 8, 4), (64, 8, 2), (40, 12, 3), (17, 16, 4)])
def test_global_batches_are_the_single_process_batches_split_over_ranks(n, batch, world):
    single = GlobalBatchSampler(n, batch, 1, 0, seed=3)
    single.set_epoch(2)
    reference = batches(single)
    ranks = []
    for rank in range(world):
        sampler = GlobalBatchSampler(n, batch, world, rank, seed=3)
        sampler.set_epoch(2)
        ranks.append(batches(sampler))
        assert all(len(b) <= batch // world for b in ranks[-1])
    assert {len(r) for r in ranks} == {len(reference)}  # every rank runs the same number of steps
    for step, rows in enumerate(reference):
        shares = [r[step] for r in ranks]
        if len(rows) >= world:  # each row of the global batch on exactly one rank
            assert sorted(sum(shares, [])) == sorted(rows)
        else:  # fewer rows than ranks: the rows once, ranks without a share pad with one row
            assert set(sum(shares, [])) - set(rows) <= {reference[0][0]}
    assert sorted(sum(reference, [])) == list(range(n))
    assert batches(GlobalBatchSampler(n, batch, 1, 0, seed=3)) != reference  # reshuffled per epoch


def test_global_batch_must_split_evenly_over_ranks():
    with pytest.raises(LelpError, match="divisible by the number of data-parallel processes"):
        GlobalBatchSampler(100, 30, num_replicas=4)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_eval_shards_read_every_row_once_in_equally_many_batches(world):
    for n in range(world, 45):
        for batch in range(1, 9):
            per_rank = [batches(EvalShardSampler(n, batch, world, r)) for r in range(world)]
            assert len({len(p) for p in per_rank}) == 1, (n, batch)
            assert [i for p in per_rank for chunk in p for i in chunk] == list(range(n))
            assert max(len(chunk) for p in per_rank for chunk in p) <= max(batch, -(-n // world))
    assert [len(b) for b in batches(EvalShardSampler(100, 7))] == [7] * 14 + [2]


def test_eval_split_smaller_than_the_process_count_is_an_error():
    with pytest.raises(LelpError, match="val split has 1 rows, fewer than the 2 processes"):
        EvalShardSampler(1, 8, 2, 0, "val")
