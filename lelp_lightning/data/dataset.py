"""Batches from the cache: one gather per array per batch, rows independent of the number of processes."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lelp_lightning.data.featurizers import StudentInputs
from lelp_lightning.samplers import EvalShardSampler, GlobalBatchSampler


class CacheDataset(Dataset):
    """Rows of one split; ``__getitems__`` answers a whole batch of indices with one gather per array."""

    def __init__(self, inputs: StudentInputs, arrays: dict[str, np.ndarray]):
        self.inputs = inputs
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: list[int]) -> dict:
        index = np.asarray(indices, dtype=np.int64)
        batch = {"inputs": self.inputs.gather(index)}
        for name, array in self.arrays.items():
            batch[name] = torch.from_numpy(np.ascontiguousarray(array[index]))
        return batch

    def __getitem__(self, index) -> dict:
        """A batch of one row (an int), or of the rows of an index array (what the samplers yield)."""
        return self.__getitems__(np.atleast_1d(index))


def _batch_as_is(batch):
    return batch


def batch_loader(dataset: CacheDataset, split: str, batch_size: int, world: int = 1, rank: int = 0,
                 shuffle: bool = False, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """Training batches of ``batch_size`` global rows (``shuffle``), or this rank's evaluation shard in batches
    of ``batch_size`` rows (see :mod:`lelp_lightning.samplers`). Inputs that know their rows' lengths (``lengths``,
    e.g. token counts) and ask for bucketing (``bucket_batches`` > 1) get length-bucketed training batches."""
    if shuffle:
        sampler = GlobalBatchSampler(len(dataset), batch_size, world, rank, seed=seed,
                                     lengths=getattr(dataset.inputs, "lengths", None),
                                     bucket_batches=getattr(dataset.inputs, "bucket_batches", 1))
    else:
        sampler = EvalShardSampler(len(dataset), batch_size, world, rank, split)
    # the sampler yields index batches: one __getitems__ (one gather per array) per batch
    return DataLoader(dataset, batch_size=None, sampler=sampler, collate_fn=_batch_as_is,
                      num_workers=num_workers, persistent_workers=num_workers > 0)
