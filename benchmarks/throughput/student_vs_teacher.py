"""The distilled students against their teachers at inference: raw input in, class probabilities out, same inputs.

    .venv/bin/python -m benchmarks.throughput.student_vs_teacher [--rows 10000] [--images 10000] [--seconds 3]

Text (binary tweets, the accuracy grid's ``--rows`` stratified subset): the MiniLM + head teacher (the students'
teacher) and the mpnet + head teacher (bf16 pass, as the grid runs it) beside three students distilled from MiniLM:
the hashed bag with the quickstart's LELP, the hashed bag with the method the accuracy grid selected on validation
for this cell (k-means, S = 4, on the encoder output, τ = 1; 2^16 buckets, 5 epochs), and the MLP on MiniLM features.
Images (binarised Fashion-MNIST, ``--images`` training images, the whole test split): the CNN teacher and the
2-block CNN student. Students are exported with ``lelp export``; each teacher is exported the same way (encoder +
head, or the CNN, in one graph); the grid's bag and the MLP also with ``lelp export --quantize int8``. Each model
runs from raw input to probabilities, eagerly in PyTorch and through onnxruntime, on the same test inputs and
``--threads`` threads: rows/s at batch 256 and p50 / p99 latency at batch 1
(:func:`lelp_lightning.serving.timing.measure`, about ``--seconds`` each), beside its test accuracy. Speed is also a
ratio to the eager teacher of the same task measured in the same run, the figure to compare across machines.
Record: ``benchmarks/results/student_vs_teacher/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "student_vs_teacher"
CACHE = REPO / "benchmarks" / "results" / "throughput" / "cache"


# the accuracy grid's selection on validation for tweets2/minilm/bag_sparse/sup ("k-means on the other
# representation, own τ"; benchmarks/results/accuracy/records/tweets2__minilm__bag_sparse__sup/)
BAG_GRID_BEST = ("--data.featurizer.init_args.num_buckets", "65536", "--data.strategy", "kmeans",
                 "--data.strategy.num_subclasses", "4", "--data.representation", "encoder", "--model.lr", "0.01",
                 "--trainer.max_epochs", "5")


def fit(run_dir: Path, *extra: str, data: str = "configs/data/tweets_binary.yaml") -> tuple[Path, Path]:
    from lelp_lightning.cli import main

    run_dir.mkdir(parents=True)
    logger = run_dir / "logger.yaml"
    logger.write_text(f"trainer:\n  logger:\n    - class_path: CSVLogger\n      init_args: {{save_dir: '{run_dir}'}}\n")
    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / data),
            "--config", str(logger), "--data.cache_dir", str(CACHE),
            "--data.progress", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(run_dir), *extra]
    assert main(args) == 0
    config = next(run_dir.rglob("config.yaml"))
    return config, config.parent / "checkpoints" / "last.ckpt"


def export_teacher(datamodule, folder: Path) -> None:
    """The teacher (encoder + head) as an export folder the predictor reads: the same graph as an encoder student's."""
    import torch

    from lelp_lightning.data.encoder_featurizer import SentenceEncoderFeaturizer
    from lelp_lightning.serving.export import ProbabilityGraph, write_graph
    from lelp_lightning.students.networks import DenseExport

    teacher = datamodule.teacher
    teacher.fit(datamodule.source, datamodule.cache)  # the head, from the cache
    spec = SentenceEncoderFeaturizer(teacher.encoder.model, teacher.encoder.max_length).export_spec()
    head = teacher._require_head()
    logits = torch.nn.Sequential(head.body, head.out)  # the head returns (embedding, logits); the graph needs logits
    folder.mkdir(parents=True)
    write_graph(ProbabilityGraph(DenseExport(logits.eval(), spec.features), datamodule.num_classes), spec,
                ["a short text", "another"], folder)
    (folder / "labels.json").write_text(json.dumps({"labels": datamodule.source.class_names}))
    (folder / "model_card.json").write_text("{}")


def export_cnn_teacher(datamodule, folder: Path) -> None:
    """The CNN teacher as an export folder the predictor reads (pixels in, its own pixel scaling)."""
    import torch

    from lelp_lightning.serving.export import OPSET

    teacher = datamodule.teacher
    teacher.fit(datamodule.source, datamodule.cache)  # the trained CNN, from the cache
    net = teacher._require_net().eval()

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            return torch.softmax(self.net(pixels)[1], dim=-1)

    folder.mkdir(parents=True)
    with torch.no_grad():
        torch.onnx.export(Probabilities().eval(), (torch.zeros(2, 1, 28, 28),), str(folder / "student.onnx"),
                          dynamo=False, opset_version=OPSET, input_names=["pixels"], output_names=["probabilities"],
                          dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}})
    spec = {"kind": "pixels", "image_shape": [28, 28], "flatten": False, "mean": teacher.mean, "std": teacher.std,
            "inputs": ["pixels"]}
    (folder / "featurizer.json").write_text(json.dumps(spec))
    (folder / "labels.json").write_text(json.dumps({"labels": datamodule.source.class_names}))
    (folder / "model_card.json").write_text("{}")


def student_eager(config: Path, ckpt: Path):
    """The student of a run as the training stack runs it (featuriser + module), and its data module."""
    import numpy as np
    import torch

    from lelp_lightning.serving.export import load_student

    model, datamodule, _ = load_student(config, ckpt)

    def eager(rows, model=model, featurizer=datamodule.featurizer):
        with torch.inference_mode():
            features = featurizer.transform(rows if isinstance(rows, np.ndarray) else list(rows))
            inputs = features.gather(np.arange(len(rows)))
            return torch.softmax(model.class_logits(inputs), dim=-1).numpy()

    return eager, datamodule


def timed(task: str, models: dict, test, threads: int, seconds: float) -> list[dict]:
    """Accuracy and speed of every (model, runtime); ``models``: name → (description, eager predict or None for an
    export-only variant, export folder)."""
    import numpy as np

    from lelp_lightning.serving import Predictor
    from lelp_lightning.serving.timing import measure

    runs = []
    labels = np.asarray(test.labels)
    for name, (description, eager, folder) in models.items():
        predictor = Predictor.load(folder, threads=threads)
        for runtime, predict in (("eager", eager), ("onnxruntime", predictor.predict_proba)):
            if predict is None:
                continue
            accuracy = float((predict(test.texts).argmax(1) == labels).mean())
            speed = measure(predict, test.texts, seconds=seconds)
            runs.append({"task": task, "model": name, "description": description, "runtime": runtime,
                         "test_accuracy": accuracy, **speed})
            print(json.dumps(runs[-1]), flush=True)
    anchor = next(r for r in runs if r["runtime"] == "eager")  # the task's students' teacher, eager
    for r in runs:
        r["speedup_vs_eager_teacher"] = round(r["rows_per_s"] / anchor["rows_per_s"], 2)
        r["accuracy_change_vs_teacher_points"] = round(100 * (r["test_accuracy"] - anchor["test_accuracy"]), 2)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000, help="the tweets subset (the accuracy grid's is 10,000)")
    parser.add_argument("--images", type=int, default=10000, help="Fashion-MNIST training images")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="recorded as is, e.g. what else ran on the machine")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from benchmarks import provenance
    from lelp_lightning.cli import main as lelp

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="student_vs_teacher-"))
    rows = ("--data.source.max_rows", str(args.rows))
    runs_of = {
        "bag": fit(work / "bag", *rows),
        "bag_grid": fit(work / "bag_grid", *rows, *BAG_GRID_BEST),
        "mlp": fit(work / "mlp", *rows, "--config", str(REPO / "configs/student/mlp_minilm.yaml")),
        "mpnet": fit(work / "mpnet", *rows, "--config", str(REPO / "configs/teacher/mpnet_mlp.yaml"),
                     "--data.teacher.init_args.precision", "bf16", "--trainer.max_epochs", "1"),
        "cnn": fit(work / "cnn", "--data.source.max_train", str(args.images), "--data.eval_batch_size", "1024",
                   data="configs/experiments/fashion_mnist.yaml"),
    }
    for name in ("bag", "bag_grid", "mlp", "cnn"):
        config, ckpt = runs_of[name]
        assert lelp(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output",
                     str(work / name / "student"), "--bench_seconds", "0"]) == 0
    for name in ("bag_grid", "mlp"):  # the opt-in int8 graphs beside the fp32 ones
        config, ckpt = runs_of[name]
        assert lelp(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output",
                     str(work / name / "student_int8"), "--quantize", "int8", "--bench_seconds", "0"]) == 0
    eager = {name: student_eager(*runs_of[name]) for name in runs_of}

    text_teacher, mpnet = eager["bag"][1].teacher, eager["mpnet"][1].teacher
    export_teacher(eager["bag"][1], work / "teacher")
    export_teacher(eager["mpnet"][1], work / "mpnet_teacher")
    export_cnn_teacher(eager["cnn"][1], work / "cnn_teacher")
    cnn_teacher = eager["cnn"][1].teacher

    def teacher_eager(teacher):
        def predict(rows):
            logits = teacher.encode(rows if isinstance(rows, np.ndarray) else list(rows))[1]
            return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        return predict

    text = {"teacher": ("all-MiniLM-L6-v2 + MLP head (teacher)", teacher_eager(text_teacher), work / "teacher"),
            "mpnet_teacher": ("all-mpnet-base-v2 + MLP head (bigger teacher; eager bf16)", teacher_eager(mpnet),
                              work / "mpnet_teacher"),
            "bag": ("hashed bag student, quickstart LELP (2^18 buckets)", eager["bag"][0], work / "bag" / "student"),
            "bag_grid": ("hashed bag student, grid's method (k-means on the encoder output, 2^16 buckets)",
                         eager["bag_grid"][0], work / "bag_grid" / "student"),
            "bag_grid_int8": ("hashed bag student, grid's method, int8 export", None,
                              work / "bag_grid" / "student_int8"),
            "mlp": ("MLP on MiniLM features student", eager["mlp"][0], work / "mlp" / "student"),
            "mlp_int8": ("MLP on MiniLM features student, int8 export", None, work / "mlp" / "student_int8")}
    images = {"cnn_teacher": ("CNN 16-32 channels + 128 FC (teacher)", teacher_eager(cnn_teacher),
                              work / "cnn_teacher"),
              "cnn": ("CNN student (8-16 channels)", eager["cnn"][0], work / "cnn" / "student")}
    text_test, image_test = eager["bag"][1].source.split("test"), eager["cnn"][1].source.split("test")
    runs = timed("tweets2", text, text_test, args.threads, args.seconds)
    runs += timed("fmnist2", images, image_test, args.threads, args.seconds)

    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/student_vs_teacher.py", "configs")
    record = {"benchmark": "student_vs_teacher", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "note": args.note,
              "tasks": {"tweets2": {"source": "Tweets(num_classes=2)", "max_rows": args.rows,
                                    "test_rows": len(text_test)},
                        "fmnist2": {"source": "FashionMNIST(binary=True)", "max_train": args.images,
                                    "test_rows": len(image_test)}},
              "threads": args.threads, "seconds": args.seconds, "machine": provenance.machine(),
              "versions": provenance.versions("torch", "lightning", "transformers", "onnxruntime", "onnx"),
              "runs": runs}
    path = provenance.write_record(RECORDS, sha, record)
    print(f"\n{provenance.cpu_name()}, {args.threads} threads; record {path.relative_to(REPO)}\n")
    print(table(runs))


def table(runs: list[dict]) -> str:
    """The markdown table of a record's runs."""
    lines = ["| task | model | runtime | test accuracy | Δ vs teacher | rows/s @256 | × eager teacher | p50 ms @1 "
             "| p99 ms @1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['task']} | {r['description']} | {r['runtime']} | {100 * r['test_accuracy']:.2f}% | "
                     f"{r['accuracy_change_vs_teacher_points']:+.2f} | {r['rows_per_s']:,.0f} | "
                     f"{r['speedup_vs_eager_teacher']:,.1f}× | {r['latency_ms_p50']:.2f} | {r['latency_ms_p99']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
