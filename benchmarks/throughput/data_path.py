"""Data path: training batches/s from the teacher cache, three ways over the same rows, batches and batch size.

    .venv/bin/python -m benchmarks.throughput.data_path [--rows 4000] [--batch-size 128] [--rounds 5]

- lelp: ``DistillDataModule.train_dataloader()`` as training uses it: the sampler yields index batches (numpy
  arrays) and ``CacheDataset`` answers each with one vectorised gather per array (memmaps included);
- per-row: the usual PyTorch pattern on the same data: ``__getitem__`` per row, a collate that concatenates
  the bags and stacks the rest (the peer);
- raw gather: the bare numpy fancy-indexing of the same arrays (bag entries included) for the same index
  batches, without DataLoader, dict or tensors (the ceiling).

The batch carries every cache array (inputs, label, teacher logits, z, teacher embedding, row id).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from benchmarks.throughput import common  # noqa: E402


class PerRow(Dataset):
    """The same rows, one ``__getitem__`` per row."""

    def __init__(self, dataset):
        self.matrix = dataset.inputs.matrix
        self.arrays = dataset.arrays

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def __getitem__(self, i: int) -> dict:
        lo, hi = self.matrix.indptr[i], self.matrix.indptr[i + 1]
        weights = self.matrix.data[lo:hi].astype(np.float32)
        row = {"ids": torch.from_numpy(self.matrix.indices[lo:hi].astype(np.int64)),
               "weights": torch.from_numpy(weights / weights.sum() if weights.size else weights)}
        for name, array in self.arrays.items():
            row[name] = torch.from_numpy(np.array(array[i]))
        return row


class RowLists:
    """The same index batches as lists of row numbers, for a per-row DataLoader's ``batch_sampler``."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return (index.tolist() for index in self.sampler)


def collate_rows(rows: list[dict]) -> dict:
    lengths = torch.tensor([len(r["ids"]) for r in rows])
    batch = {"inputs": {"ids": torch.cat([r["ids"] for r in rows]),
                        "offsets": torch.cumsum(lengths, 0) - lengths,
                        "weights": torch.cat([r["weights"] for r in rows])}}
    for name in rows[0]:
        if name not in ("ids", "weights"):
            batch[name] = torch.stack([r[name] for r in rows])
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="least time per timing (whole epochs)")
    args = parser.parse_args()
    _, _, datamodule = common.lelp_objects(args.rows, Path(tempfile.mkdtemp(prefix="lelp-bench-")),
                                           "--data.batch_size", str(args.batch_size))
    lelp_loader = datamodule.loader("train", shuffle=True, keys={"teacher_embedding", "row_id"})
    dataset = lelp_loader.dataset
    sampler = lelp_loader.sampler
    per_row_loader = DataLoader(PerRow(dataset), batch_sampler=RowLists(sampler), collate_fn=collate_rows)
    first = next(iter(lelp_loader)), next(iter(per_row_loader))
    for key in ("label", "teacher_logits", "subclass_logits", "teacher_embedding", "row_id"):
        torch.testing.assert_close(first[0][key], first[1][key])
    for key in ("ids", "offsets", "weights"):
        torch.testing.assert_close(first[0]["inputs"][key], first[1]["inputs"][key])

    bags = dataset.inputs

    def raw_gather():
        for index in sampler:
            starts = bags.indptr[index]
            counts = bags.indptr[index + 1] - starts
            positions = np.arange(int(counts.sum())) + np.repeat(starts - (np.cumsum(counts) - counts), counts)
            bags.ids[positions], bags.weights[positions]
            for array in dataset.arrays.values():
                array[index]

    variants = {"lelp (index batches, one gather)": lambda: sum(1 for _ in lelp_loader),
                "per-row __getitem__ + collate": lambda: sum(1 for _ in per_row_loader),
                "raw memmap gather (ceiling)": raw_gather}
    per_epoch = len(lelp_loader)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds + 1):
        for name in names[r % 3:] + names[: r % 3]:
            epochs, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:  # whole epochs, at least `seconds` long
                sampler.set_epoch(epochs)
                variants[name]()
                epochs += 1
            if r:  # round 0 warms page cache and allocator
                rates[name].append(epochs * per_epoch / (time.perf_counter() - start))
    best = {name: max(rates[name]) for name in names}
    typical = {name: common.median(rates[name]) for name in names}
    lelp = names[0]
    rows = []
    for name in names:
        rows.append({"path": name, "rows": len(dataset), "batch_size": args.batch_size, "batches_per_epoch": per_epoch,
                     "rounds": args.rounds, "batches_per_s_best": best[name], "batches_per_s_median": typical[name],
                     "lelp_vs_this_best": best[lelp] / best[name], "lelp_vs_this_median": typical[lelp] / typical[name],
                     "all_rates": " ".join(f"{x:.1f}" for x in rates[name])})
    path = common.write_csv("data_path", rows)
    common.print_table(f"data path, {len(dataset)} rows, batch {args.batch_size}, keys {sorted(dataset.arrays)} "
                       f"+ inputs ({common.threads_note()}); best and median of {args.rounds} rounds", rows,
                       ["path", "batches_per_s_best", "lelp_vs_this_best", "batches_per_s_median",
                        "lelp_vs_this_median"])
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
