"""The teacher pass as Lightning predict: any number of processes (DDP), devices and nodes, resumable.

``lelp cache`` runs :func:`build_teacher_cache`: every process encodes its share of the pending blocks
(round robin over a fixed, length-sorted block order, so shares cost alike) and writes the rows straight
into the preallocated cache arrays (:mod:`lelp_lightning.cache.blocks`, the same protocol a one-process
build uses); after a barrier rank 0 seals each
entry (checksums, manifest last, atomic rename). Two passes run one after the other:

1. the teacher's label-free entries (``Teacher.pass_targets``: a frozen encoder's features, the expensive part);
2. the teacher's own entries (embedding + logits per split), after ``Teacher.fit`` — rank 0 fits first
   (e.g. trains the head on the cached features and saves it), then the other processes load what it saved,
   so every process encodes with the same weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader

from lelp_lightning.cache.blocks import BlockBuild, PassTarget
from lelp_lightning.cache.plan import CachePlan
from lelp_lightning.cache.teacher_cache import TeacherCache
from lelp_lightning.samplers import EvalShardSampler

log = logging.getLogger(__name__)


def _one_item(index: np.ndarray) -> int:
    return int(index[0])


class TeacherPass(LightningModule):
    """Predict over cache blocks: ``predict_step`` encodes one block and writes its rows into the cache."""

    def __init__(self, cache: TeacherCache, make_targets: Callable[[], list[PassTarget]], name: str = "teacher"):
        super().__init__()
        self.cache = cache
        self.name = name
        self.make_targets = make_targets
        self.teacher_modules = nn.ModuleList()
        self.builds: list[BlockBuild] = []
        self.writers = []
        self.work: list[tuple[int, int]] = []
        self.rows_cached = 0

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if self.global_rank == 0:  # fits the teacher first and prepares the partial entries
            self.builds = [BlockBuild(self.cache, t) for t in self.make_targets()]
            for build in self.builds:
                build.prepare()
        strategy.barrier("teacher pass: prepared")
        if self.global_rank != 0:
            self.builds = [BlockBuild(self.cache, t) for t in self.make_targets()]
        for build in self.builds:
            self.teacher_modules.extend(m for m in build.target.modules if m not in self.teacher_modules)
        pending = []
        for i, build in enumerate(self.builds):
            done = build.done_blocks()
            self.rows_cached += sum(len(build.target.block(b)) for b in done)
            pending += [(i, b) for b in range(build.target.num_blocks) if b not in done]
        pending.sort(key=lambda item: (item[1], item[0]))  # block b of every entry: alike in length
        self.work = pending[self.global_rank::self.trainer.world_size]
        self.writers = [build.writer(self.global_rank) for build in self.builds]

    def predict_dataloader(self) -> DataLoader:
        # a DistributedSampler of one replica: Lightning keeps it; the work is already this process's share
        return DataLoader(np.arange(len(self.work)), batch_size=None, sampler=EvalShardSampler(len(self.work), 1),
                          collate_fn=_one_item)

    def predict_step(self, item: int, batch_idx: int) -> None:
        target_index, block = self.work[item]
        build = self.builds[target_index]
        embedding, logits = build.target.encode(build.target.block(block))
        self.writers[target_index].write(block, embedding, logits)

    def configure_model(self) -> None:
        """Nothing to shard (the teacher is frozen; each process holds it whole): lets FSDP presets run the pass."""

    def finish(self) -> None:
        """After predict, on every process: sync and close the writers; rank 0 then seals every entry."""
        for writer in self.writers:
            writer.close()
        total = sum(len(build.target.order) for build in self.builds)
        if total:
            log.info("teacher pass [%s]: rank %d wrote %d of %d rows; %d were cached before this run", self.name,
                     self.global_rank, sum(w.rows_written for w in self.writers), total, self.rows_cached)
        self.trainer.strategy.barrier("teacher pass: written")
        if self.global_rank == 0:
            for build in self.builds:
                build.finish()
        self.trainer.strategy.barrier("teacher pass: sealed")


def build_teacher_cache(trainer: Trainer, plan: CachePlan) -> None:
    """Fill every missing cache entry of ``plan`` with ``trainer``'s processes (``lelp cache``)."""
    if not plan.missing():
        log.info("teacher cache hit for every split in %s; the teacher does not run", plan.cache.root)
        return
    trainer.loggers = []  # a cache build logs no run
    for name, make_targets in (("features", plan.feature_targets), ("outputs", plan.output_targets)):
        teacher_pass = TeacherPass(plan.cache, make_targets, name)
        trainer.predict(teacher_pass, return_predictions=False)
        teacher_pass.finish()
