"""Fitting a strategy under DDP: each rank fits on its shard and the statistics are summed over ranks.

A strategy that sets ``shardable = True`` fits from sums (counts, Σh, Σhhᵀ, centroid sums, responsibilities)
that it passes through ``self.comm.sum_``; :func:`fit_strategy` hands each rank a contiguous shard and the
all-reduce makes every rank end with the state a single-process fit on all rows gives. Any other strategy
(t-SNE, agglomerative, Subclass Distillation's head) is fitted on rank 0 and its state broadcast.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from lelp_lightning.core import shard_bounds


class Comm(Protocol):
    """What a strategy's ``_fit`` reaches through ``self.comm``: the processes that fit it together."""

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Add each tensor in place over the ranks (every rank ends with the global sum)."""

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""


class LocalComm:
    """Single process: sums are already global."""

    def sum_(self, *tensors: torch.Tensor) -> None:
        pass

    def gather(self, obj) -> list:
        return [obj]


class ProcessGroupComm:
    """The default process group: sums are all-reduced in place, objects gathered from every rank."""

    def sum_(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def gather(self, obj) -> list:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out


LOCAL = LocalComm()


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def fit_strategy(strategy, embeddings: np.ndarray, labels: np.ndarray, classifier, rows) -> None:
    """Fit ``strategy`` on every training row, in one process or across the ranks of the default group."""
    rank, world_size = world()
    if world_size == 1:
        strategy.fit(embeddings, labels, classifier, rows=rows)
    elif strategy.shardable:
        lo, hi = shard_bounds(embeddings.shape[0], rank, world_size)
        strategy.fit(embeddings[lo:hi], labels[lo:hi], classifier, rows=rows.slice(lo, hi), sharded=True)
    else:
        payload: list = [None]
        if rank == 0:
            try:
                payload = [strategy.fit(embeddings, labels, classifier, rows=rows).state_dict()]
            except Exception as err:  # every rank raises it, instead of the others waiting forever
                payload = [err]
        dist.broadcast_object_list(payload, src=0)
        if isinstance(payload[0], Exception):
            raise payload[0]
        if rank != 0:
            strategy.load_state_dict(payload[0])
