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

Two ``lelp cache`` runs of one cache do not race: the run's first process holds the plan's lock
(:meth:`CachePlan.lock`) before it starts the others, and each pass's rank 0 the lock of every entry it builds
(:meth:`TeacherCache.lock`), so a second run waits, then finds the cache finished and does not run the teacher.
SIGTERM (``kill``, a scheduler's preemption) stops the pass at the next block boundary: the block being encoded
is written and logged, the others stay pending, and :class:`PassStopped` says how many remain (``lelp cache``
prints it and exits with status 143, 128 + SIGTERM); the same command resumes from there.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

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


class PassStopped(Exception):
    """The teacher pass stopped on SIGTERM at a block boundary; ``str()`` is the one line that says so."""


class _Sigterm:
    """SIGTERM noted, not acted on: the pass checks :attr:`received` at block boundaries (Lightning's own handler,
    installed during predict, runs this one too and forwards the signal to the processes it started)."""

    def __init__(self):
        self.received = False

    def __call__(self, signum, frame) -> None:
        self.received = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Sigterm]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


class TeacherPass(LightningModule):
    """Predict over cache blocks: ``predict_step`` encodes one block and writes its rows into the cache."""

    def __init__(self, cache: TeacherCache, make_targets: Callable[[], list[PassTarget]], name: str = "teacher",
                 sigterm: _Sigterm | None = None):
        super().__init__()
        self.cache = cache
        self.name = name
        self.make_targets = make_targets
        self.sigterm = sigterm or _Sigterm()
        self.locks = contextlib.ExitStack()  # rank 0's entry locks, held from prepare to seal
        self.teacher_modules = nn.ModuleList()
        self.builds: list[BlockBuild] = []
        self.writers = []
        self.work: list[tuple[int, int]] = []
        self.rows_cached = 0

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if self.global_rank == 0:  # fits the teacher first, locks and prepares the partial entries
            targets = self.make_targets()
            for key in sorted({t.key for t in targets}):  # in one order: two passes cannot hold one each
                self.locks.enter_context(self.cache.lock(key, f"the teacher cache entry {key}"))
            self.builds = self._unbuilt(targets)  # another process may have built some while this one waited
            for build in self.builds:
                build.prepare()
        strategy.barrier("teacher pass: prepared")
        if self.global_rank != 0:  # what rank 0 kept: the entries it locked stay as they were
            self.builds = self._unbuilt(self.make_targets())
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

    def _unbuilt(self, targets: list[PassTarget]) -> list[BlockBuild]:
        return [BlockBuild(self.cache, t) for t in targets if not self.cache.exists(t.key)]

    def stopping(self) -> bool:
        return self.sigterm.received or self.trainer.received_sigterm

    def predict_dataloader(self) -> DataLoader:
        # a DistributedSampler of one replica: Lightning keeps it; the work is already this process's share
        return DataLoader(np.arange(len(self.work)), batch_size=None, sampler=EvalShardSampler(len(self.work), 1),
                          collate_fn=_one_item)

    def predict_step(self, item: int, batch_idx: int) -> None:
        if self.stopping():  # a block boundary: the blocks before this one are written, this one is not begun
            raise PassStopped(self.stopped_message())
        target_index, block = self.work[item]
        build = self.builds[target_index]
        embedding, logits = build.target.encode(build.target.block(block))
        self.writers[target_index].write(block, embedding, logits)

    def configure_model(self) -> None:
        """Nothing to shard (the teacher is frozen; each process holds it whole): lets FSDP presets run the pass."""

    def stopped_message(self) -> str:
        """What a stop leaves: this process's finished blocks synced and logged, and how many blocks remain."""
        self.close_writers()
        total = sum(build.target.num_blocks for build in self.builds)
        done = sum(len(build.done_blocks()) for build in self.builds)
        later = " (then the outputs pass)" if self.name == "features" else ""
        return (f"the teacher pass [{self.name}] stopped on SIGTERM at a block boundary: {done} of {total} blocks "
                f"are cached, {total - done} remain{later}; the same command resumes it from there.")

    def close_writers(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []

    def finish(self) -> None:
        """After predict, on every process: sync and close the writers; rank 0 then seals every entry."""
        writers = self.writers
        self.close_writers()
        total = sum(len(build.target.order) for build in self.builds)
        if total:
            log.info("teacher pass [%s]: rank %d wrote %d of %d rows; %d were cached before this run", self.name,
                     self.global_rank, sum(w.rows_written for w in writers), total, self.rows_cached)
        self.trainer.strategy.barrier("teacher pass: written")
        if self.global_rank == 0:
            for build in self.builds:
                build.finish()
            self.locks.close()
        self.trainer.strategy.barrier("teacher pass: sealed")


def build_teacher_cache(trainer: Trainer, plan: CachePlan) -> None:
    """Fill every missing cache entry of ``plan`` with ``trainer``'s processes (``lelp cache``).

    Raises :class:`PassStopped` when SIGTERM stopped it (at a block boundary: the same call resumes it)."""
    if not plan.missing():
        log.info("teacher cache hit for every split in %s; the teacher does not run", plan.cache.root)
        return
    # the process that starts the others (or the only one) holds the plan's lock before any other exists: a
    # second `lelp cache` of this plan waits here, not at a barrier of its own processes
    leads = trainer.global_rank == 0 and (trainer.world_size == 1 or trainer.strategy.launcher is not None)
    with (plan.lock() if leads else contextlib.nullcontext()), _Sigterm().installed() as sigterm:
        if not plan.missing():  # another run built it while this one waited
            log.info("teacher cache hit for every split in %s; the teacher does not run", plan.cache.root)
            return
        trainer.loggers = []  # a cache build logs no run
        for name, make_targets in (("features", plan.feature_targets), ("outputs", plan.output_targets)):
            if sigterm.received or trainer.received_sigterm:  # between the passes
                _stop_started_processes(trainer)
                raise PassStopped(f"the teacher cache build stopped on SIGTERM before the teacher pass [{name}]; the "
                                  "same command resumes it from there.")
            teacher_pass = TeacherPass(plan.cache, make_targets, name, sigterm)
            try:
                trainer.predict(teacher_pass, return_predictions=False)
                teacher_pass.finish()
            except BaseException:
                teacher_pass.close_writers()  # blocks finished before the stop or the error stay logged
                raise
            finally:
                teacher_pass.locks.close()


def _stop_started_processes(trainer: Trainer) -> None:
    """Pass SIGTERM on to the processes this one started (Lightning does so only during predict)."""
    launcher = trainer.strategy.launcher
    if launcher is not None and trainer.global_rank == 0:
        launcher.kill(signal.SIGTERM)
