"""The distilled students against their teachers at inference: raw input in, class probabilities out, same inputs.

    .venv/bin/python -m benchmarks.throughput.student_vs_teacher [--rows 10000] [--images 10000] [--seconds 3]
        [--models bag,bag_grid,mlp,mpnet,static,model2vec,transformer,setfit,cnn] [--cache_dir DIR]

Text (binary tweets, the accuracy grid's ``--rows`` stratified subset): the MiniLM + head teacher (the students'
teacher) and the mpnet + head teacher (bf16 pass, as the grid runs it) beside four students distilled from MiniLM:
the hashed bag with the quickstart's LELP, the hashed bag with the method the accuracy grid selected on validation
for this cell (k-means, S = 4, on the encoder output, τ = 1; 2^16 buckets, 5 epochs), the MLP on MiniLM features,
and the static-embedding student (``configs/student/static.yaml``: MiniLM's token table distilled by model2vec, PCA
256, hidden 512) with the quickstart's LELP. Its peer is model2vec's own classifier on the same distilled table:
``StaticModelForClassification`` trained with its defaults on the same training rows (the validation rows for its
early stopping), timed through its ``predict_proba`` (PyTorch) and its ``to_pipeline()`` (numpy, model2vec's
inference pipeline), and ``StaticModel.encode`` alone (the embedding step, no head, no accuracy). The transformer
student (``configs/student/transformer.yaml``: MiniLM's layers 0, 2, 4, fine-tuned; one epoch here, to bound the
benchmark's cost) with the quickstart's LELP. SetFit's inference (``SetFitModel.predict_proba``: the full MiniLM body
and a logistic-regression head) is timed for speed only: its body is not fine-tuned here (a SetFit fit is ~25 min on
this CPU; the inference cost is the same), so it reports no accuracy (the accuracy grid's peer rows do).
Images (binarised Fashion-MNIST, ``--images`` training images, the whole test split): the CNN teacher and the
2-block CNN student. Students are exported with ``lelp export``; each teacher is exported the same way (encoder +
head, or the CNN, in one graph); the grid's bag and the MLP also with ``lelp export --quantize int8``. Each model
runs from raw input to probabilities, eagerly in PyTorch and through onnxruntime, on the same test inputs and
``--threads`` threads (torch, onnxruntime, numpy's BLAS and the tokenizers' pool): rows/s at batch 256 and p50 / p99
latency at batch 1 (:func:`lelp_lightning.serving.timing.measure`, about ``--seconds`` each), beside its test
accuracy. Speed is also a ratio to the eager teacher of the same task measured in the same run, the figure to
compare across machines, and the static student's rows/s over model2vec's and the teacher's (``static_ratios``).

``--models`` runs a part (a task's teacher always runs with it; ``model2vec`` needs ``static``, whose table it
trains on); such a record lists its ``models`` and is not ``complete``. ``--cache_dir``: the teacher outputs and
the distilled table are content-keyed and locked, so the accuracy grid's ``.lelp_cache`` can be shared to skip
a teacher pass and the table's distillation. Record: ``benchmarks/results/student_vs_teacher/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "student_vs_teacher"
CACHE = REPO / "benchmarks" / "results" / "throughput" / "cache"
MODELS = ("bag", "bag_grid", "mlp", "mpnet", "static", "model2vec", "transformer", "setfit", "cnn")  # --models
TEXT_STUDENTS = ("bag", "bag_grid", "mlp", "static", "transformer")  # fits whose data module holds the MiniLM teacher
STATIC = REPO / "configs" / "student" / "static.yaml"
TRANSFORMER = REPO / "configs" / "student" / "transformer.yaml"
SETFIT_HEAD_ROWS = 1000  # training rows SetFit's logistic-regression head is fitted on (as many as the few-label cells)


# the accuracy grid's selection on validation for tweets2/minilm/bag_sparse/sup ("k-means on the other
# representation, own τ"; benchmarks/results/accuracy/records/tweets2__minilm__bag_sparse__sup/)
BAG_GRID_BEST = ("--data.featurizer.init_args.num_buckets", "65536", "--data.strategy", "kmeans",
                 "--data.strategy.num_subclasses", "4", "--data.representation", "encoder", "--model.lr", "0.01",
                 "--trainer.max_epochs", "5")


def fit(run_dir: Path, *extra: str, cache: Path = CACHE, data: str = "configs/data/tweets_binary.yaml"
        ) -> tuple[Path, Path]:
    from lelp_lightning.cli import main

    run_dir.mkdir(parents=True)
    logger = run_dir / "logger.yaml"
    logger.write_text(f"trainer:\n  logger:\n    - class_path: CSVLogger\n      init_args: {{save_dir: '{run_dir}'}}\n")
    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / data),
            "--config", str(logger), "--data.cache_dir", str(cache),
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


@dataclass
class Entry:
    """One (model, runtime) to time: ``predict`` maps raw rows to class probabilities (to an embedding where
    ``classifies`` is false: timed, no accuracy)."""

    name: str
    description: str
    runtime: str
    predict: Callable
    classifies: bool = True


def exported(name: str, description: str, eager, folder: Path, threads: int) -> list[Entry]:
    """A model eagerly (unless ``eager`` is None: an export-only variant) and its export through onnxruntime."""
    from lelp_lightning.serving import Predictor

    onnx = Entry(name, description, "onnxruntime", Predictor.load(folder, threads=threads).predict_proba)
    return [onnx] if eager is None else [Entry(name, description, "eager", eager), onnx]


def model2vec_entries(featurizer, train, val) -> tuple[list[Entry], dict]:
    """model2vec's classifier on the static student's own distilled table (``featurizer.static_model``), trained
    with its defaults on the training rows (the validation rows stop it early), seed 0 as the students: its
    PyTorch ``predict_proba``, its numpy pipeline, and ``StaticModel.encode`` alone; and what the record notes."""
    from model2vec.train import StaticModelForClassification

    classifier = StaticModelForClassification.from_static_model(model=featurizer.static_model)
    start = time.perf_counter()
    classifier.fit(list(train.texts), train.labels.tolist(), X_val=list(val.texts), y_val=val.labels.tolist(),
                   random_seed=0, device="cpu")
    fit_s = time.perf_counter() - start
    classifier.eval()  # columns of predict_proba: its sorted classes 0 .. C-1, the labels' order
    pipeline = classifier.to_pipeline()
    table = f"the static student's distilled table ({featurizer.table_key})"
    entries = [Entry("model2vec", f"model2vec StaticModelForClassification on {table}, its defaults",
                     "model2vec (torch)", classifier.predict_proba),
               Entry("model2vec_pipeline", "model2vec's inference pipeline of that classifier (to_pipeline)",
                     "model2vec (numpy)", pipeline.predict_proba),
               Entry("model2vec_encode", "model2vec StaticModel.encode alone (the embedding step, no head)",
                     "model2vec (numpy)", pipeline.model.encode, classifies=False)]
    return entries, {"table": featurizer.table_key, "fit_s": round(fit_s, 1), "train_rows": len(train),
                     "val_rows": len(val)}


def setfit_entry(train) -> Entry:
    """SetFit's inference path on the bundled MiniLM body: its logistic-regression head fitted on the body's embeddings
    of the first ``SETFIT_HEAD_ROWS`` training rows, without the contrastive fine-tuning (which changes the weights,
    not the cost): timed, no accuracy."""
    import numpy as np
    from setfit import SetFitModel

    from lelp_lightning.encoders.sentence import resolve_model_path

    model = SetFitModel.from_pretrained(str(resolve_model_path("all-MiniLM-L6-v2")))
    rows = np.random.default_rng(0).choice(len(train.labels), SETFIT_HEAD_ROWS, replace=False)
    model.model_head.fit(model.encode([train.texts[i] for i in rows], batch_size=256), train.labels[rows])
    return Entry("setfit", "SetFit inference: all-MiniLM-L6-v2 body + logistic regression (speed only)",
                 "setfit (torch)", lambda rows: model.predict_proba(list(rows), batch_size=256, as_numpy=True),
                 classifies=False)


def timed(task: str, entries: list[Entry], test, seconds: float) -> list[dict]:
    """Accuracy and speed of every entry; the task's first eager entry is its students' teacher (the anchor)."""
    import numpy as np

    from lelp_lightning.serving.timing import measure

    runs = []
    labels = np.asarray(test.labels)
    for entry in entries:
        accuracy = float((entry.predict(test.texts).argmax(1) == labels).mean()) if entry.classifies else None
        speed = measure(entry.predict, test.texts, seconds=seconds)
        runs.append({"task": task, "model": entry.name, "description": entry.description, "runtime": entry.runtime,
                     "test_accuracy": accuracy, **speed})
        print(json.dumps(runs[-1]), flush=True)
    anchor = next(r for r in runs if r["runtime"] == "eager")  # the task's students' teacher, eager
    for r in runs:
        r["speedup_vs_eager_teacher"] = round(r["rows_per_s"] / anchor["rows_per_s"], 2)
        r["accuracy_change_vs_teacher_points"] = (None if r["test_accuracy"] is None else
                                                  round(100 * (r["test_accuracy"] - anchor["test_accuracy"]), 2))
    return runs


# what the static student's rows/s is divided by: the MiniLM teacher and model2vec's three inference paths
STATIC_REFERENCES = (("teacher", "eager"), ("teacher", "onnxruntime"), ("model2vec", "model2vec (torch)"),
                     ("model2vec_pipeline", "model2vec (numpy)"), ("model2vec_encode", "model2vec (numpy)"))


def static_ratios(runs: list[dict]) -> list[dict]:
    """The static student's rows/s at batch 256 (eager, onnxruntime) over each reference's, same run."""
    by = {(r["model"], r["runtime"]): r for r in runs if r["task"] == "tweets2"}
    return [{"static": runtime, "over": f"{model} ({reference})",
             "ratio": round(by["static", runtime]["rows_per_s"] / by[model, reference]["rows_per_s"], 2)}
            for runtime in ("eager", "onnxruntime") if ("static", runtime) in by
            for model, reference in STATIC_REFERENCES if (model, reference) in by]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000, help="the tweets subset (the accuracy grid's is 10,000)")
    parser.add_argument("--images", type=int, default=10000, help="Fashion-MNIST training images")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--cache_dir", type=Path, default=CACHE, help="the runs' data.cache_dir")
    parser.add_argument("--note", default="", help="recorded as is, e.g. what else ran on the machine")
    args = parser.parse_args()
    chosen = [m for m in MODELS if m in args.models.split(",")]
    if unknown := sorted(set(args.models.split(",")) - set(MODELS)):
        parser.error(f"unknown models {unknown}; expected some of {', '.join(MODELS)}")
    if "model2vec" in chosen and "static" not in chosen:
        parser.error("model2vec trains on the static student's distilled table: add static to --models")
    if {"mpnet", "model2vec", "setfit"} & set(chosen) and not set(TEXT_STUDENTS) & set(chosen):
        parser.error(f"the text models run beside their MiniLM teacher, read from a student's run: add one of "
                     f"{', '.join(TEXT_STUDENTS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # the tokenizers' pool, before it starts
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from benchmarks import provenance
    from lelp_lightning.cli import main as lelp

    torch.set_num_threads(args.threads)
    load = {"start": os.getloadavg()}
    cache = args.cache_dir.resolve()
    work = Path(tempfile.mkdtemp(prefix="student_vs_teacher-"))
    rows = ("--data.source.max_rows", str(args.rows))
    fits = {"bag": (rows, {}), "bag_grid": ((*rows, *BAG_GRID_BEST), {}),
            "mlp": ((*rows, "--config", str(REPO / "configs/student/mlp_minilm.yaml")), {}),
            "mpnet": ((*rows, "--config", str(REPO / "configs/teacher/mpnet_mlp.yaml"),
                       "--data.teacher.init_args.precision", "bf16", "--trainer.max_epochs", "1"), {}),
            "static": ((*rows, "--config", str(STATIC)), {}),
            "transformer": ((*rows, "--config", str(TRANSFORMER), "--trainer.max_epochs", "1"), {}),
            "cnn": (("--data.source.max_train", str(args.images), "--data.eval_batch_size", "1024"),
                    {"data": "configs/experiments/fashion_mnist.yaml"})}
    runs_of = {name: fit(work / name, *extra, cache=cache, **kw) for name, (extra, kw) in fits.items()
               if name in chosen}
    for name in ("bag", "bag_grid", "mlp", "static", "transformer", "cnn"):
        if name in runs_of:
            config, ckpt = runs_of[name]
            assert lelp(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output",
                         str(work / name / "student"), "--bench_seconds", "0"]) == 0
    for name in ("bag_grid", "mlp"):  # the opt-in int8 graphs beside the fp32 ones
        if name in runs_of:
            config, ckpt = runs_of[name]
            assert lelp(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output",
                         str(work / name / "student_int8"), "--quantize", "int8", "--bench_seconds", "0"]) == 0
    eager = {name: student_eager(*runs_of[name]) for name in runs_of}

    def teacher_eager(teacher):
        def predict(rows):
            logits = teacher.encode(rows if isinstance(rows, np.ndarray) else list(rows))[1]
            return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        return predict

    runs, tasks, peer = [], {}, None
    text_data = next((eager[name][1] for name in TEXT_STUDENTS if name in eager), None)
    if text_data is not None:
        export_teacher(text_data, work / "teacher")
        text = exported("teacher", "all-MiniLM-L6-v2 + MLP head (teacher)", teacher_eager(text_data.teacher),
                        work / "teacher", args.threads)
        if "mpnet" in eager:
            export_teacher(eager["mpnet"][1], work / "mpnet_teacher")
            text += exported("mpnet_teacher", "all-mpnet-base-v2 + MLP head (bigger teacher; eager bf16)",
                             teacher_eager(eager["mpnet"][1].teacher), work / "mpnet_teacher", args.threads)
        students = {"bag": "hashed bag student, quickstart LELP (2^18 buckets)",
                    "bag_grid": "hashed bag student, grid's method (k-means on the encoder output, 2^16 buckets)",
                    "mlp": "MLP on MiniLM features student",
                    "static": "static-embedding student (MiniLM table distilled by model2vec, PCA 256; hidden 512), "
                              "quickstart LELP",
                    "transformer": "transformer student (MiniLM's layers 0, 2, 4 fine-tuned, 1 epoch), quickstart LELP"}
        int8 = {"bag_grid": "hashed bag student, grid's method, int8 export",
                "mlp": "MLP on MiniLM features student, int8 export"}
        for name, description in students.items():
            if name in eager:
                text += exported(name, description, eager[name][0], work / name / "student", args.threads)
            if name in int8 and name in eager:
                text += exported(f"{name}_int8", int8[name], None, work / name / "student_int8", args.threads)
        source = text_data.source
        with threadpool_limits(args.threads):
            if "model2vec" in chosen:
                m2v, peer = model2vec_entries(eager["static"][1].featurizer, source.split("train"),
                                              source.split("val"))
                text += m2v
            if "setfit" in chosen:
                text.append(setfit_entry(source.split("train")))
            load["timing"] = os.getloadavg()
            text_test = source.split("test")
            runs += timed("tweets2", text, text_test, args.seconds)
        tasks["tweets2"] = {"source": "Tweets(num_classes=2)", "max_rows": args.rows, "test_rows": len(text_test)}
    if "cnn" in eager:
        export_cnn_teacher(eager["cnn"][1], work / "cnn_teacher")
        images = exported("cnn_teacher", "CNN 16-32 channels + 128 FC (teacher)",
                          teacher_eager(eager["cnn"][1].teacher), work / "cnn_teacher", args.threads)
        images += exported("cnn", "CNN student (8-16 channels)", eager["cnn"][0], work / "cnn" / "student",
                           args.threads)
        image_test = eager["cnn"][1].source.split("test")
        with threadpool_limits(args.threads):
            runs += timed("fmnist2", images, image_test, args.seconds)
        tasks["fmnist2"] = {"source": "FashionMNIST(binary=True)", "max_train": args.images,
                            "test_rows": len(image_test)}
    load["end"] = os.getloadavg()

    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/student_vs_teacher.py", "configs")
    ratios = static_ratios(runs)
    record = {"benchmark": "student_vs_teacher", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "note": args.note, "models": chosen, "complete": chosen == list(MODELS), "cache_dir": str(cache),
              "tasks": tasks, "threads": args.threads, "seconds": args.seconds,
              "machine": provenance.machine(load_avg=load),
              "versions": provenance.versions("torch", "lightning", "transformers", "onnxruntime", "onnx", "numpy",
                                              "tokenizers", *(["model2vec"] if peer else []),
                                              *(["setfit", "sentence-transformers"] if "setfit" in chosen else [])),
              "model2vec": peer, "runs": runs, "static_ratios": ratios}
    path = provenance.write_record(RECORDS, sha, record)
    print(f"\n{provenance.cpu_name()}, {args.threads} threads; record {path.relative_to(REPO)}\n")
    print(table(runs))
    if ratios:
        print("\n" + ratio_table(ratios))


def table(runs: list[dict]) -> str:
    """The markdown table of a record's runs (an embedding-only run has no accuracy: a dash)."""
    lines = ["| task | model | runtime | test accuracy | Δ vs teacher | rows/s @256 | × eager teacher | p50 ms @1 "
             "| p99 ms @1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        accuracy, change = "—", "—"
        if r["test_accuracy"] is not None:
            accuracy, change = f"{100 * r['test_accuracy']:.2f}%", f"{r['accuracy_change_vs_teacher_points']:+.2f}"
        lines.append(f"| {r['task']} | {r['description']} | {r['runtime']} | {accuracy} | {change} | "
                     f"{r['rows_per_s']:,.0f} | {r['speedup_vs_eager_teacher']:,.1f}× | {r['latency_ms_p50']:.2f} | "
                     f"{r['latency_ms_p99']:.2f} |")
    return "\n".join(lines)


def ratio_table(ratios: list[dict]) -> str:
    """The markdown table of a record's ``static_ratios``."""
    lines = ["| static student | over | rows/s ratio @256 |", "|---|---|---|"]
    lines += [f"| {r['static']} | {r['over']} | {r['ratio']:,.2f}× |" for r in ratios]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
