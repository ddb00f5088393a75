"""Where a training step of the hashed-bag student goes, phase by phase, beside fastText's time for the same rows;
and the table's update compiled to native code, as a bound on what a faster update could save.

    .venv/bin/python -m benchmarks.throughput.step_breakdown [--epochs 4] [--threads 2] [--tasks 20ng_bin,tweets_bin]

The quickstart's student (``ce`` objective, batch and rows as in ``fasttext_anchor.py``) trained by a hand loop
over the real batches, each phase timed on its own: reading the batch, forward with the loss, backward, AdamW on
the dense layers, the table's update. Table updates: the two optimisers of ``lelp_lightning.optim`` (lazy Adam,
row-wise Adagrad), then the same two rules as numba kernels (``native_*``: one pass sums each distinct row's
gradient, one parallel pass updates those rows in place; no sort, no temporary beyond the summed rows). Each native
kernel is checked against the library's optimiser on the first batch before it is timed. Lightning's own cost per
step is not in these phases (``training_loop.py`` measures it). fastText: ``train_supervised`` on the same rows
(settings of ``fasttext_anchor.py``) three times, its median time divided by our number of steps (fastText works
example by example; this is its time for the rows of one of our batches). The first epoch warms up and is
dropped; medians over the steps of the other epochs. Record: ``benchmarks/results/step_breakdown/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "step_breakdown"
PHASES = ("load", "forward", "backward", "dense_step", "table_step")
VARIANTS = ("lazy_adam", "rowwise_adagrad", "native_lazy_adam", "native_rowwise_adagrad")
FASTTEXT_LR = 0.5  # speed does not depend on it; fasttext_anchor.py chooses it on validation for accuracy


def native_kernels():
    """The numba kernels: (sum each distinct row's gradient, lazy Adam on those rows, row-wise Adagrad on them)."""
    from numba import njit, prange

    @njit(cache=True)
    def sum_rows(ids, values, position, rows, summed):
        count = 0
        for i in range(ids.shape[0]):
            p = position[ids[i]]
            if p < 0:
                p = position[ids[i]] = count
                rows[count] = ids[i]
                count += 1
                for d in range(values.shape[1]):
                    summed[p, d] = values[i, d]
            else:
                for d in range(values.shape[1]):
                    summed[p, d] += values[i, d]
        return count

    @njit(cache=True, parallel=True)
    def lazy_adam(count, rows, summed, position, weight, exp_avg, exp_avg_sq, beta1, beta2, step_size, eps):
        for j in prange(count):
            r = rows[j]
            position[r] = -1
            for d in range(weight.shape[1]):
                g = summed[j, d]
                exp_avg[r, d] = beta1 * exp_avg[r, d] + (1 - beta1) * g
                exp_avg_sq[r, d] = beta2 * exp_avg_sq[r, d] + (1 - beta2) * g * g
                weight[r, d] -= step_size * exp_avg[r, d] / (math.sqrt(exp_avg_sq[r, d]) + eps)

    @njit(cache=True, parallel=True)
    def rowwise_adagrad(count, rows, summed, position, weight, row_sum, lr, eps):
        for j in prange(count):
            r = rows[j]
            position[r] = -1
            squares = 0.0
            for d in range(weight.shape[1]):
                squares += summed[j, d] * summed[j, d]
            row_sum[r] += squares / weight.shape[1]
            scale = lr / (math.sqrt(row_sum[r]) + eps)
            for d in range(weight.shape[1]):
                weight[r, d] -= scale * summed[j, d]

    return sum_rows, lazy_adam, rowwise_adagrad


class NativeTableStep:
    """The library optimiser's rule for one table, stepped by the numba kernels on numpy views of its tensors."""

    def __init__(self, library_optimizer, kernels):
        import torch

        self.kernels = kernels
        (self.param,) = library_optimizer.param_groups[0]["params"]
        self.group = library_optimizer.param_groups[0]
        self.adam = "betas" in self.group
        rows, width = self.param.shape
        self.position = np.full(rows, -1, dtype=np.int64)
        self.rows, self.summed = np.empty(0, dtype=np.int64), np.empty((0, width), dtype=np.float32)
        self.moments = [torch.zeros_like(self.param) for _ in range(2)] if self.adam else [torch.zeros(rows)]
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.param.grad = None

    def step(self) -> None:
        grad = self.param.grad
        ids, values = grad._indices()[0].numpy(), grad._values().numpy()
        if len(self.rows) < len(ids):
            self.rows = np.empty(int(len(ids) * 1.25), dtype=np.int64)
            self.summed = np.empty((len(self.rows), self.param.shape[1]), dtype=np.float32)
        sum_rows, lazy_adam, rowwise_adagrad = self.kernels
        count = sum_rows(ids, values, self.position, self.rows, self.summed)
        weight = self.param.detach().numpy()
        self.steps += 1
        if self.adam:
            beta1, beta2 = self.group["betas"]
            step_size = self.group["lr"] * math.sqrt(1 - beta2 ** self.steps) / (1 - beta1 ** self.steps)
            lazy_adam(count, self.rows, self.summed, self.position, weight, *(m.numpy() for m in self.moments),
                      beta1, beta2, step_size, self.group["eps"])
        else:
            rowwise_adagrad(count, self.rows, self.summed, self.position, weight, self.moments[0].numpy(),
                            self.group["lr"], self.group["eps"])


def build(task_args: list[str], table_optimizer: str, run_dir: Path):
    """A fresh model (seed 0) of the quickstart's student with ``ce``, its data and its two optimisers."""
    from benchmarks.throughput.fasttext_anchor import quiet
    from lelp_lightning.cli import build_cli

    ce = ["--config", str(REPO / "configs" / "method" / "ce.yaml"),
          "--model.student.init_args.table_optimizer", table_optimizer]
    cli = build_cli(quiet(task_args, ce, 0, run_dir), run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    model = cli.model
    for objective in model.objectives:
        objective.setup(model.student, cli.datamodule.teacher_statistics())
    dense, table = model.configure_optimizers()
    return model, cli.datamodule, dense, table


def check_native(model, datamodule, library, kernels) -> float:
    """Largest difference between the library optimiser's and a native kernel's table after one real step, each
    from the same table (the table is put back as it was; the library optimiser is not used after it)."""
    import torch

    batch = next(iter(datamodule.loader("train", shuffle=True, keys=model.batch_keys)))
    loss = sum(o.weight * o(model.student(batch["inputs"]), batch) for o in model.objectives)
    loss.backward()
    native = NativeTableStep(library, kernels)
    before = native.param.detach().clone()
    library.step()
    expected = native.param.detach().clone()
    with torch.no_grad():
        native.param.copy_(before)
        native.step()
        difference = float((native.param - expected).abs().max())
        native.param.copy_(before)
    model.zero_grad(set_to_none=True)
    return difference


def time_steps(model, datamodule, dense, table, epochs: int) -> dict[str, list[float]]:
    loader = datamodule.loader("train", shuffle=True, keys=model.batch_keys)
    model.train()
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            loaded = time.perf_counter()
            loss = sum(o.weight * o(model.student(batch["inputs"]), batch) for o in model.objectives)
            forward = time.perf_counter()
            dense.zero_grad(set_to_none=True)
            table.zero_grad(set_to_none=True)
            loss.backward()
            backward = time.perf_counter()
            dense.step()
            dense_step = time.perf_counter()
            table.step()
            end = time.perf_counter()
            if epoch:
                for phase, seconds in zip(PHASES, (loaded - start, forward - loaded, backward - forward,
                                                   dense_step - backward, end - dense_step), strict=True):
                    times[phase].append(1000 * seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", default="20ng_bin,tweets_bin")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from benchmarks import provenance
    from benchmarks.throughput.fasttext_anchor import EPOCHS, TASKS, fasttext_run

    kernels = native_kernels()
    work = Path(tempfile.mkdtemp(prefix="lelp-steps-"))
    results = []
    for task in args.tasks.split(","):
        for variant in VARIANTS:
            model, datamodule, dense, table = build(TASKS[task], variant.removeprefix("native_"), work)
            difference = None
            if variant.startswith("native_"):
                difference = check_native(model, datamodule, table, kernels)
                table = NativeTableStep(table, kernels)  # fresh state for the timed steps
                if difference > 1e-5:
                    raise SystemExit(f"{variant} differs from the library's optimiser by {difference} after one step.")
            times = time_steps(model, datamodule, dense, table, args.epochs)
            steps = len(datamodule.loader("train", shuffle=True))
            row = {"task": task, "variant": variant, "steps_per_epoch": steps, "check_max_difference": difference,
                   **{f"{p}_ms": statistics.median(times[p]) for p in PHASES}}
            row["step_ms"] = sum(row[f"{p}_ms"] for p in PHASES)
            results.append(row)
            print(json.dumps(row), flush=True)
        source = datamodule.source
        fasttext = [fasttext_run(source, seed, args.threads, work, FASTTEXT_LR)["train_seconds"] for seed in range(3)]
        results.append({"task": task, "variant": "fasttext", "train_seconds": fasttext, "steps_per_epoch": steps,
                        "step_ms": 1000 * statistics.median(fasttext) / (EPOCHS * steps)})
        print(json.dumps(results[-1]), flush=True)
    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/step_breakdown.py")
    record = {"benchmark": "step_breakdown", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "threads": args.threads, "epochs": args.epochs, "machine": provenance.machine(),
              "versions": provenance.versions("torch", "lightning", "numba", "fasttext-wheel"), "results": results}
    path = provenance.write_record(RECORDS, sha, record)
    print(f"\n{provenance.cpu_name()}, {args.threads} threads; record {path.name}; ms per step (medians)")
    print(f"{'task':<11}{'variant':<24}" + "".join(f"{p:>12}" for p in PHASES) + f"{'step':>9}{'vs fastText':>13}")
    for task in args.tasks.split(","):
        anchor = next(r["step_ms"] for r in results if r["task"] == task and r["variant"] == "fasttext")
        for r in (r for r in results if r["task"] == task):
            phases = "".join(f"{r[f'{p}_ms']:>12.3f}" if f"{p}_ms" in r else f"{'':>12}" for p in PHASES)
            print(f"{task:<11}{r['variant']:<24}{phases}{r['step_ms']:>9.3f}{r['step_ms'] / anchor:>12.2f}×")


if __name__ == "__main__":
    main()
