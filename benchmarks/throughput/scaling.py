"""Scaling: cache build, strategy fit and training-epoch time as N grows 10× and 100×; linear means the
time per row stays flat (``vs_linear`` = (t(kN) / t(N)) / k ≈ 1).

    .venv/bin/python -m benchmarks.throughput.scaling [--teacher-rows 32] [--rows 10000] [--epoch-rows 500]

- cache build, real teacher: all-MiniLM-L6-v2 features of ``teacher-rows`` × {1, 10, 100} real tweets
  (``build_entry``: the block build with one process);
- cache build, cache machinery alone: ``rows`` × {1, 10, 100} rows of real teacher outputs (the 4000-tweet
  benchmark cache, tiled) replayed through the single-process build and through the multi-process block
  writer (one process), so the writes, syncs, checksums and manifest are what is timed;
- strategy fit: LELP (``LinearProjectionStrategy``) fitted on ``rows`` × {1, 10, 100} tiled teacher embeddings;
- epoch time: a `lelp fit` training epoch (Lightning, a hashed-bag student of 2^14 × 32, batch 128) over
  ``epoch-rows`` × {1, 10, 100} tiled training rows: the fastest of ``epochs`` − 1 after a warm-up epoch.

On a shared machine the fastest of several timings is kept (``--repeats``, the three sizes interleaved in
each repeat), the least disturbed estimate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.throughput import common  # noqa: E402
from lelp_lightning.cache import BlockBuild, PassTarget, TeacherCache, build_entry  # noqa: E402
from lelp_lightning.data.dataset import CacheDataset  # noqa: E402
from lelp_lightning.data.featurizers import BagInputs  # noqa: E402
from lelp_lightning.samplers import GlobalBatchSampler  # noqa: E402
from lelp_lightning.sources import SPLITS, Tweets  # noqa: E402
from lelp_lightning.strategies import LinearProjectionStrategy  # noqa: E402
from lelp_lightning.teachers import SentenceEncoderTeacher  # noqa: E402

FACTORS = (1, 10, 100)
# a lighter hashed-bag student than the quickstart's (2^18 x 64) for the epoch stage, so that 100x fits in
# minutes on 2 cores; a step's cost does not depend on N either way
EPOCH_STUDENT = ("--data.featurizer.num_buckets", "16384", "--model.student.init_args.embed_dim", "32")


def spread(n: int, rows: int) -> np.ndarray:
    """n positions that cycle through a fixed permutation of ``rows`` (the cached split is sorted by label)."""
    return np.random.default_rng(0).permutation(rows)[np.arange(n) % rows]


def scratch() -> Path:
    common.CACHE.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=common.CACHE, prefix="scaling-"))


def real_teacher_build(n: int) -> float:
    folder = scratch()
    try:
        teacher = SentenceEncoderTeacher(max_length=128, batch_size=64)
        source = Tweets(num_classes=2, max_rows=n, seed=0)
        teacher.encoder.embed(["warm up"])
        return common.timed(lambda: [teacher.features(source, s, TeacherCache(folder)) for s in SPLITS])
    finally:
        shutil.rmtree(folder)


def replay_build(embedding: np.ndarray, logits: np.ndarray, labels: np.ndarray, blocks: bool) -> float:
    """Build a cache entry of these rows with a teacher that only hands them over, 64 rows at a time."""
    folder = scratch()
    n = len(labels)
    try:
        cache = TeacherCache(folder)
        target = PassTarget(key="replay", labels=labels, row_ids=np.arange(n), embedding_dim=embedding.shape[1],
                            num_classes=logits.shape[1], meta={}, order=np.arange(n), block_size=64,
                            encode=lambda index: (embedding[index], logits[index]),
                            classifier=lambda: (np.zeros((2, 32)), np.zeros(2)))
        if not blocks:
            return common.timed(lambda: build_entry(cache, target, progress=False))

        def run():
            build = BlockBuild(cache, target)
            build.prepare()
            writer = build.writer(0)
            for block in range(target.num_blocks):
                writer.write(block, *target.encode(target.block(block)))
            writer.close()
            build.finish()
        return common.timed(run)
    finally:
        shutil.rmtree(folder)


def epoch_time(n: int, run_dir: Path, epochs: int) -> float:
    """The fastest training epoch of `lelp fit`'s module over n tiled training rows, warm-up epoch excluded."""
    trainer, model, datamodule = common.lelp_objects(4000, run_dir, "--trainer.max_epochs", str(epochs),
                                                     *EPOCH_STUDENT)
    train = datamodule.dataset("train")
    tile = spread(n, len(train))
    dataset = CacheDataset(BagInputs(train.inputs.matrix[tile]),
                           {k: np.asarray(a)[tile] for k, a in train.arrays.items()})
    loader = DataLoader(dataset, batch_size=None, sampler=GlobalBatchSampler(n, datamodule.batch_size),
                        collate_fn=lambda batch: batch)
    timer = common.EpochTimer()
    trainer.callbacks.append(timer)
    trainer.fit(model, train_dataloaders=loader)
    return min(timer.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher-rows", type=int, default=32)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--epoch-rows", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: tiny ops are not stalled by a busy machine's other processes)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per size (the fastest is kept)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per size (the fastest after the first is kept)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["teacher", "replay", "strategy", "epoch"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(tempfile.mkdtemp(prefix="lelp-bench-"))
    _, _, datamodule = common.lelp_objects(4000, run_dir)
    train = datamodule.split_cache("train")
    embedding, logits, labels = np.asarray(train.embedding), np.asarray(train.logits), np.asarray(train.label)

    def tiled(n: int):
        tile = spread(n, len(labels))
        noise = np.random.default_rng(n).normal(scale=1e-3, size=(n, embedding.shape[1])).astype(np.float32)
        return embedding[tile] + noise, logits[tile], labels[tile]

    stages = {
        "teacher": ("cache build, MiniLM teacher (1 process)", args.teacher_rows, real_teacher_build),
        "replay": ("cache build machinery, single-process build", args.rows,
                   lambda n: replay_build(*tiled(n), blocks=False)),
        "blocks": ("cache build machinery, block writer (lelp cache)", args.rows,
                   lambda n: replay_build(*tiled(n), blocks=True)),
        "strategy": ("strategy fit, LELP", args.rows, lambda n: common.timed(
            lambda: LinearProjectionStrategy(num_subclasses=4).fit(*tiled(n)[::2], (train.W, train.b)))),
        "epoch": ("training epoch, lelp fit (hashed bag 2^14 x 32)", args.epoch_rows,
                  lambda n: epoch_time(n, run_dir, args.epochs)),
    }
    rows = []
    for stage, (what, base, measure) in stages.items():
        if stage in args.skip or (stage == "blocks" and "replay" in args.skip):
            continue
        best = {factor: float("inf") for factor in FACTORS}
        for _ in range(1 if stage == "teacher" else args.repeats):  # sizes interleaved within a repeat
            for factor in FACTORS:
                best[factor] = min(best[factor], measure(base * factor))
                print(f"{what}: n={base * factor}: {best[factor]:.3f} s (fastest so far)", flush=True)
        for factor in FACTORS:
            rows.append({"stage": what, "n": base * factor, "factor": factor, "seconds": best[factor],
                         "us_per_row": 1e6 * best[factor] / (base * factor), "growth": best[factor] / best[1],
                         "vs_linear": best[factor] / best[1] / factor})
    path = common.write_csv("scaling", rows, "transformers")
    common.print_table(f"scaling ({common.threads_note()}); vs_linear = growth / factor, 1.0 is linear", rows,
                       ["stage", "n", "seconds", "us_per_row", "growth", "vs_linear"])
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
