"""The hashed-bag student against fastText, the tool it imitates: training time and test accuracy on the same rows.

    .venv/bin/python -m benchmarks.throughput.fasttext_anchor [--seeds 3] [--threads 2] [--tasks 20ng_bin,tweets_bin]

Both sides read the same labeled training rows (the student-alone setting), tokenised alike (lower-cased
``\\b\\w+\\b`` words, so fastText sees exactly the tokens our hashing featuriser sees), word uni+bigrams, 2^18
buckets, 64 dimensions, 6 epochs, the same number of threads. fastText's learning rate is chosen on the
validation split (seed 0) from ``FASTTEXT_LRS`` (its default, 0.1, is meant for far more data or epochs; softmax
loss, minCount 1); ours keeps the quickstart's (AdamW, lr 0.02, batch 64) with the ``ce`` objective
(configs/method/ce.yaml), untuned here. Our time is the summary's ``fit_seconds`` (the training loop with
its per-epoch validation; the cached teacher is not used by ``ce``); fastText's is its ``train_supervised`` call.
Beside them, the distilled student of the quickstart (LELP, the default) on the same task, same seeds; and both
of ours again with the table trained by row-wise Adagrad (``table_optimizer: rowwise_adagrad``, ``*_adagrad``), its
``table_lr`` chosen on validation (seed 0) from ``ADAGRAD_LRS`` for each side and task. Each final
configuration runs once per seed and reads the test split once. Record: ``benchmarks/results/fasttext_anchor/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "fasttext_anchor"
QUICKSTART = ["--config", str(REPO / "configs" / "quickstart.yaml"), "--data.cache_dir", str(REPO / ".lelp_cache")]
TASKS = {
    "20ng_bin": [],  # the quickstart's 4,000 / 400 / 1,200 subset of binarised 20 Newsgroups
    "tweets_bin": ["--config", str(REPO / "configs" / "data" / "tweets_binary.yaml"), "--data.source.max_rows", "4000"],
}
EPOCHS, DIM, BUCKETS = 6, 64, 2**18
FASTTEXT_LRS = (0.1, 0.25, 0.5, 1.0)
ADAGRAD_LRS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
TOKEN = re.compile(r"(?u)\b\w+\b")


def tokens(text: str) -> str:
    return " ".join(TOKEN.findall(text.lower()))


def fasttext_run(source, seed: int, threads: int, work: Path, lr: float, split: str = "test") -> dict:
    """Train fastText on the training rows; its accuracy on ``split`` (validation for selection, test once)."""
    import fasttext

    train, evaluated = source.split("train"), source.split(split)
    path = work / "train.txt"
    path.write_text("".join(f"__label__{y} {tokens(t)}\n" for t, y in zip(train.texts, train.labels, strict=True)))
    start = time.perf_counter()
    model = fasttext.train_supervised(str(path), lr=lr, dim=DIM, epoch=EPOCHS, wordNgrams=2, bucket=BUCKETS,
                                      minCount=1, loss="softmax", thread=threads, seed=seed, verbose=0)
    seconds = time.perf_counter() - start
    labels, _ = model.predict([tokens(t) for t in evaluated.texts])
    predicted = [int(label[0].removeprefix("__label__")) for label in labels]
    accuracy = sum(int(p == y) for p, y in zip(predicted, evaluated.labels, strict=True)) / len(predicted)
    return {"train_seconds": seconds, f"{split}_accuracy": accuracy, "train_rows": len(train), "lr": lr}


def adagrad(method: list[str], table_lr: float) -> list[str]:
    """``method`` with the bag's table trained by row-wise Adagrad at ``table_lr``."""
    return [*method, "--model.student.init_args.table_optimizer", "rowwise_adagrad",
            "--model.student.init_args.table_lr", str(table_lr)]


def quiet(task_args: list[str], method: list[str], seed: int, run_dir: Path) -> list[str]:
    return [*QUICKSTART, *task_args, *method, "--seed_everything", str(seed), "--trainer.max_epochs", str(EPOCHS),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger", "false", "--trainer.enable_checkpointing",
            "false", "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]


def ours_val(task_args: list[str], method: list[str], run_dir: Path) -> float:
    """Validation accuracy of ours (seed 0), the test split untouched: for choosing the table's learning rate."""
    from lelp_lightning.cli import build_cli

    cli = build_cli(quiet(task_args, method, 0, run_dir), run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return float(cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/accuracy"])


def ours(task_args: list[str], method: list[str], seed: int, run_dir: Path) -> dict:
    from lelp_lightning.cli import fit

    summary = fit(quiet(task_args, method, seed, run_dir))
    return {"train_seconds": summary["fit_seconds"], "test_accuracy": summary["student"]["test_accuracy"],
            "teacher_accuracy": summary["teacher"]["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from benchmarks import provenance
    from lelp_lightning.cli import build_cli

    work = Path(tempfile.mkdtemp(prefix="lelp-fasttext-"))
    ce = ["--config", str(REPO / "configs" / "method" / "ce.yaml")]
    runs = []
    for task in args.tasks.split(","):
        cli = build_cli([*QUICKSTART, *TASKS[task]], run=False)
        cli.datamodule.prepare_data()  # the teacher cache (the distilled side needs it), untimed
        source = cli.datamodule.source
        selection = [fasttext_run(source, 0, args.threads, work, lr, "val") for lr in FASTTEXT_LRS]
        lr = max(selection, key=lambda r: r["val_accuracy"])["lr"]  # ties: the first, the smallest rate
        runs += [{"task": task, "side": "fasttext_selection", "seed": 0, **r} for r in selection]
        sides = {"fasttext": lambda seed, source=source, lr=lr: fasttext_run(source, seed, args.threads, work, lr),
                 "ours_ce": lambda seed, task=task: ours(TASKS[task], ce, seed, work / "runs"),
                 "ours_distilled": lambda seed, task=task: ours(TASKS[task], [], seed, work / "runs")}
        for side, method in (("ours_ce_adagrad", ce), ("ours_distilled_adagrad", [])):
            chosen = {}
            for table_lr in ADAGRAD_LRS:
                chosen[table_lr] = ours_val(TASKS[task], adagrad(method, table_lr), work / "runs")
                runs.append({"task": task, "side": f"{side}_selection", "seed": 0, "table_lr": table_lr,
                             "val_accuracy": chosen[table_lr]})
            table_lr = max(ADAGRAD_LRS, key=lambda x, chosen=chosen: chosen[x])  # ties: the first, the smallest
            table = adagrad(method, table_lr)
            sides[side] = lambda seed, task=task, table=table, table_lr=table_lr: {
                **ours(TASKS[task], table, seed, work / "runs"), "table_lr": table_lr}
        for seed in range(args.seeds):
            for side, run in sides.items():
                result = {"task": task, "side": side, "seed": seed, **run(seed)}
                runs.append(result)
                print(json.dumps(result), flush=True)
    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/fasttext_anchor.py", "configs")
    record = {"benchmark": "fasttext_anchor", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "threads": args.threads, "epochs": EPOCHS, "dim": DIM, "buckets": BUCKETS, "tasks": TASKS,
              "machine": provenance.machine(), "versions": provenance.versions("torch", "lightning", "fasttext-wheel"),
              "runs": runs}
    path = provenance.write_record(RECORDS, sha, record)
    print(f"\n{provenance.cpu_name()}, {args.threads} threads, {args.seeds} seeds; record {path.name}")
    print(f"{'task':<11}{'side':<24}{'test acc %':>16}{'train s':>10}{'rows/s':>10}{'time vs fastText':>18}")
    for task in args.tasks.split(","):
        anchor = statistics.median(r["train_seconds"] for r in runs if r["task"] == task and r["side"] == "fasttext")
        chosen = next(r["lr"] for r in runs if r["task"] == task and r["side"] == "fasttext")
        print(f"{task}: fastText lr {chosen} (validation, from {FASTTEXT_LRS})")
        rows = next(r["train_rows"] for r in runs if r["task"] == task and r["side"] == "fasttext")
        for side in ("fasttext", "ours_ce", "ours_distilled", "ours_ce_adagrad", "ours_distilled_adagrad"):
            mine = [r for r in runs if r["task"] == task and r["side"] == side]
            acc = [100 * r["test_accuracy"] for r in mine]
            sec = statistics.median(r["train_seconds"] for r in mine)
            spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
            note = f" (table_lr {mine[0]['table_lr']}, validation)" if "table_lr" in mine[0] else ""
            print(f"{task:<11}{side:<24}{statistics.mean(acc):>9.2f} ± {spread:4.2f}{sec:>10.2f}"
                  f"{rows * EPOCHS / sec:>10.0f}{sec / anchor:>17.2f}×{note}")


if __name__ == "__main__":
    main()
