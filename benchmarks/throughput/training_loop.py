"""Training loop: epoch time of `lelp fit` vs a minimal hand-written PyTorch loop over the same cache, student,
objective, optimiser, batches and batch size (Lightning's own parity benchmark is the model: same work,
timed per epoch, warm-up epoch dropped).

    .venv/bin/python -m benchmarks.throughput.training_loop [--rows 4000] [--epochs 4] [--rounds 3]

Both sides get a fresh DistillModule built by the same CLI config under the same seed, and iterate the
same batches (``DistillDataModule.loader``) and optimisers (lazy Adam + AdamW for the sparse bag); `lelp fit`
runs with no logger, checkpoint, validation or progress bar, which the hand loop lacks too. Rounds alternate the
two; the overhead is the ratio of median epoch times minus one, of the fastest epochs, and (``paired``, the least
sensitive to a shared machine's drifting load) the median over rounds of each round's lelp / hand-loop ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.throughput import common  # noqa: E402


def lelp_fit(rows: int, epochs: int, run_dir: Path) -> list[float]:
    trainer, model, datamodule = common.lelp_objects(rows, run_dir, "--trainer.max_epochs", str(epochs))
    timer = common.EpochTimer()
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    return timer.seconds


def hand_loop(rows: int, epochs: int, run_dir: Path) -> list[float]:
    """What `lelp fit` does per step, written out: forward, summed objectives, zero_grad, backward, step of every
    optimiser the model configures (for the sparse bag: lazy Adam on the rows the batch touches, AdamW on the rest)."""
    _, model, datamodule = common.lelp_objects(rows, run_dir)
    for objective in model.objectives:
        objective.setup(model.student, datamodule.teacher_statistics())
    optimizers = model.configure_optimizers()
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    loader = datamodule.loader("train", shuffle=True, keys=model.batch_keys)
    model.train()
    seconds = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        for batch in loader:
            logits = model.student(batch["inputs"])
            loss = sum(objective.weight * objective(logits, batch) for objective in model.objectives)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="lelp-bench-"))
    _, model, datamodule = common.lelp_objects(args.rows, run_dir)  # builds the teacher cache once, untimed
    steps = len(datamodule.loader("train", shuffle=True))
    seconds = {"lelp fit": [], "hand-written loop": []}
    per_round: dict[str, list[float]] = {name: [] for name in seconds}
    for r in range(args.rounds):
        order = [("lelp fit", lelp_fit), ("hand-written loop", hand_loop)][:: 1 if r % 2 == 0 else -1]
        for name, run in order:
            epoch_seconds = run(args.rows, args.epochs, run_dir)[1:]  # the first epoch warms up
            seconds[name] += epoch_seconds
            per_round[name].append(common.median(epoch_seconds))
            print(f"round {r}: {name}: epochs {' '.join(f'{s:.3f}' for s in epoch_seconds)} s", flush=True)
    peer = common.median(seconds["hand-written loop"])
    peer_best = min(seconds["hand-written loop"])
    paired = [a / b for a, b in zip(per_round["lelp fit"], per_round["hand-written loop"], strict=True)]
    rows = []
    for name, values in seconds.items():
        rows.append({"loop": name, "train_rows": len(datamodule.dataset("train")), "batch_size": datamodule.batch_size,
                     "steps_per_epoch": steps, "student": type(model.student).__name__,
                     "params": sum(p.numel() for p in model.parameters()), "epochs_timed": len(values),
                     "median_epoch_seconds": common.median(values), "min_epoch_seconds": min(values),
                     "ratio_vs_hand_loop": common.median(values) / peer,
                     "overhead_percent": 100 * (common.median(values) / peer - 1),
                     "overhead_percent_best": 100 * (min(values) / peer_best - 1),
                     "overhead_percent_paired": 100 * (common.median(paired) - 1) if name == "lelp fit" else 0.0,
                     "all_seconds": " ".join(f"{s:.4f}" for s in values)})
    path = common.write_csv("training_loop", rows)
    common.print_table(f"training loop, {rows[0]['train_rows']} rows, batch {rows[0]['batch_size']}, "
                       f"{steps} steps/epoch ({common.threads_note()})", rows,
                       ["loop", "median_epoch_seconds", "overhead_percent", "min_epoch_seconds",
                        "overhead_percent_best", "overhead_percent_paired"])
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    torch.set_float32_matmul_precision("highest")
    main()
