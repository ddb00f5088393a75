"""Samplers that yield whole index batches, independent of the number of processes.

Each yields one ``np.ndarray`` of row positions per batch, used with ``DataLoader(batch_size=None)``, so
``CacheDataset`` answers a batch with one vectorised gather per array (no per-row Python work). Both are
``DistributedSampler`` subclasses, so Lightning uses them as they are instead of injecting its own (which
pads evaluation splits with duplicated rows and reshuffles training rows per process count):

- :class:`GlobalBatchSampler` (training): one seeded permutation per epoch, cut into global batches of
  ``batch_size`` rows; each of W processes takes its contiguous 1/W of every global batch. With gradients
  averaged over processes (DDP, FSDP) an update sees the same rows whatever W is. Given the rows' lengths (token
  counts), it buckets: each chunk of ``bucket_batches`` global batches of the permutation is sorted by length
  before it is cut, and the batches then run in a shuffled order, so a batch pads little and the epoch is still
  every row once, in an order that depends on the seed and the epoch only.
- :class:`EvalShardSampler` (val / test / predict): each process reads a contiguous shard, no row twice, in
  as many batches as every other process (FSDP all-gathers weights in every forward, so one extra batch on
  one process would hang the others).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from lelp_lightning.core import shard_bounds
from lelp_lightning.errors import LelpError


class _Rows:
    """A stand-in dataset of n rows: the samplers only need its length."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class GlobalBatchSampler(DistributedSampler):
    """Training batches: this process's 1/W of every global batch of a per-epoch seeded permutation.

    The last global batch (fewer than ``batch_size`` rows) is split as evenly as possible; if it has fewer
    rows than processes, a process with no share takes the epoch's first row (as ``DistributedSampler``
    pads), so every process runs the same number of steps.

    ``lengths`` (one per row, e.g. token counts) with ``bucket_batches`` > 1 and ``shuffle``: length-bucketed
    batches (sorted within chunks of ``bucket_batches`` global batches, then the batches shuffled), for inputs
    padded to their batch's longest row.
    """

    def __init__(self, num_rows: int, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, lengths: np.ndarray | None = None, bucket_batches: int = 1):
        if batch_size % num_replicas:
            raise LelpError(f"data.batch_size is the global batch size and must be divisible by the number of "
                            f"data-parallel processes ({num_replicas}), got {batch_size}.")
        if lengths is not None and len(lengths) != num_rows:
            raise ValueError(f"lengths has {len(lengths)} entries for {num_rows} rows.")
        super().__init__(_Rows(num_rows), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self.local_batch_size = batch_size // num_replicas
        self.lengths, self.bucket_batches = lengths, bucket_batches

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (the same on every process)."""
        n = len(self.dataset)
        if not self.shuffle:
            order = np.arange(n)
        else:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).numpy()
        bucketed = self.shuffle and self.lengths is not None and self.bucket_batches > 1
        if bucketed:
            chunk = self.batch_size * self.bucket_batches
            order = np.concatenate([part[np.argsort(self.lengths[part], kind="stable")]
                                    for part in np.split(order, range(chunk, n, chunk))])
        batches = [order[start: start + self.batch_size] for start in range(0, n, self.batch_size)]
        if bucketed:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[np.ndarray]:
        batches = self.global_batches()
        lo = self.rank * self.local_batch_size
        for batch in batches:
            if len(batch) == self.batch_size:
                yield batch[lo: lo + self.local_batch_size]
            else:
                a, b = shard_bounds(len(batch), self.rank, self.num_replicas)
                yield batch[a:b] if b > a else batches[0][:1]


class EvalShardSampler(DistributedSampler):
    """Evaluation batches in row order: this process's contiguous shard, every row once over all processes.

    The per-process batch size is at most ``batch_size`` and chosen so that every shard has the same number
    of batches.
    """

    def __init__(self, num_rows: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 split: str = "evaluation"):
        super().__init__(_Rows(num_rows), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.lo, self.hi = shard_bounds(num_rows, rank, num_replicas)
        self.local_batch_size = eval_batch_size(num_rows, num_replicas, batch_size, split)

    def __len__(self) -> int:
        return math.ceil((self.hi - self.lo) / self.local_batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(self.lo, self.hi, self.local_batch_size):
            yield np.arange(start, min(start + self.local_batch_size, self.hi))


def eval_batch_size(num_rows: int, world_size: int, batch_size: int, split: str = "evaluation") -> int:
    """A per-process batch size ≤ ``batch_size`` that gives every process's shard the same number of batches."""
    if world_size == 1:
        return batch_size
    sizes = {hi - lo for lo, hi in (shard_bounds(num_rows, r, world_size) for r in range(world_size))}
    if min(sizes) == 0:
        raise LelpError(f"the {split} split has {num_rows} rows, fewer than the {world_size} processes; "
                        "use fewer processes or a bigger split.")
    for k in range(math.ceil(max(sizes) / batch_size), 1, -1):
        b = math.ceil(max(sizes) / k)
        if all(math.ceil(s / b) == k for s in sizes):
            return b
    return max(sizes)  # one batch per process
