"""The distilled students against their teacher at inference: raw text in, class probabilities out, same texts.

    .venv/bin/python benchmarks/throughput/student_vs_teacher.py [--rows 4000] [--seconds 3] [--threads 2]

One task (binary tweets, a ``--rows`` stratified subset, the quickstart's LELP method): the MiniLM + head teacher,
the hashed-bag student and the MLP student on MiniLM features are fitted (teacher cache under
benchmarks/results/throughput/cache), the students exported with ``lelp export``, the teacher exported the same way
(its encoder and head in one graph). Each model then runs from raw text to probabilities, eagerly in PyTorch and
through onnxruntime, on the same test texts and ``--threads`` threads: rows/s at batch 256 and p50 / p99 latency at
batch 1 (:func:`lelp_lightning.serving.timing.measure`, about ``--seconds`` each), beside its test accuracy. Speed
is also given as a ratio to the eager teacher measured in the same run, the figure to compare across machines
(a machine shared with other jobs slows every row alike). Record: ``benchmarks/results/student_vs_teacher/``.
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
sys.path.insert(0, str(REPO / "benchmarks"))


def fit(run_dir: Path, rows: int, *extra: str) -> tuple[Path, Path]:
    from lelp_lightning.cli import main

    run_dir.mkdir(parents=True)
    logger = run_dir / "logger.yaml"
    logger.write_text(f"trainer:\n  logger:\n    - class_path: CSVLogger\n      init_args: {{save_dir: '{run_dir}'}}\n")
    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / "configs/data/tweets_binary.yaml"),
            "--config", str(logger), "--data.source.max_rows", str(rows), "--data.cache_dir", str(CACHE),
            "--data.progress", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(run_dir), *extra]
    assert main(args) == 0
    config = next(run_dir.rglob("config.yaml"))
    return config, config.parent / "checkpoints" / "last.ckpt"


def export_teacher(datamodule, folder: Path) -> None:
    """The teacher (encoder + head) as an export folder the predictor reads: the same graph as an encoder student's."""
    import shutil

    import torch
    from transformers import AutoModel

    from lelp_lightning.data.encoder_featurizer import SentenceEncoderFeaturizer
    from lelp_lightning.encoders.sentence import resolve_model_path
    from lelp_lightning.serving.export import OPSET, EncoderGraph, featurizer_spec

    teacher = datamodule.teacher
    teacher.fit(datamodule.source, datamodule.cache)  # the head, from the cache
    spec, extra = featurizer_spec(SentenceEncoderFeaturizer(teacher.encoder.model, teacher.encoder.max_length))
    folder.mkdir(parents=True)
    for name, src in extra.items():
        shutil.copyfile(src, folder / name)
    net = AutoModel.from_pretrained(resolve_model_path(teacher.encoder.model), attn_implementation="eager").eval()
    head = teacher._require_head()
    logits = torch.nn.Sequential(head.body, head.out)  # the head returns (embedding, logits); the graph needs logits
    graph = EncoderGraph(logits.eval(), datamodule.num_classes, net, spec["normalize"]).eval()
    example = {n: torch.ones(2, 8, dtype=torch.long) for n in spec["inputs"]}
    with torch.no_grad():
        torch.onnx.export(graph, tuple(example.values()), str(folder / "student.onnx"), dynamo=False, opset_version=OPSET,
                          input_names=spec["inputs"], output_names=["probabilities"],
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in spec["inputs"]},
                                        "probabilities": {0: "batch"}})
    (folder / "featurizer.json").write_text(json.dumps(spec))
    (folder / "labels.json").write_text(json.dumps({"labels": datamodule.source.class_names}))
    (folder / "model_card.json").write_text("{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="recorded as is, e.g. what else ran on the machine")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import provenance
    import torch

    from lelp_lightning.cli import main as lelp
    from lelp_lightning.serving import Predictor
    from lelp_lightning.serving.export import load_student
    from lelp_lightning.serving.timing import measure

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="student_vs_teacher-"))
    bag = fit(work / "bag", args.rows)
    mlp = fit(work / "mlp", args.rows, "--config", str(REPO / "configs/student/mlp_minilm.yaml"))
    for name, (config, ckpt) in {"bag": bag, "mlp": mlp}.items():
        assert lelp(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output", str(work / name / "student"),
                     "--bench_seconds", "0"]) == 0

    models = {}
    for name, (config, ckpt) in {"bag": bag, "mlp": mlp}.items():
        model, datamodule, _ = load_student(config, ckpt)

        def eager(texts, model=model, featurizer=datamodule.featurizer):
            with torch.inference_mode():
                inputs = featurizer.transform(list(texts)).gather(np.arange(len(texts)))
                return torch.softmax(model.class_logits(inputs), dim=-1).numpy()

        models[name] = (eager, work / name / "student")
    teacher = datamodule.teacher
    export_teacher(datamodule, work / "teacher")
    test = datamodule.source.split("test")

    def eager_teacher(texts):
        return torch.softmax(torch.from_numpy(teacher.encode(list(texts))[1]), dim=-1).numpy()

    names = {"teacher": "MiniLM-L6 + MLP head (teacher)", "bag": "hashed bag student", "mlp": "MLP on MiniLM student"}
    runs = []
    for name, (eager, folder) in {"teacher": (eager_teacher, work / "teacher"), **models}.items():
        predictor = Predictor.load(folder, threads=args.threads)
        for runtime, predict in (("eager", eager), ("onnxruntime", predictor.predict_proba)):
            accuracy = float((predict(test.texts).argmax(1) == test.labels).mean())
            speed = measure(predict, test.texts, seconds=args.seconds)
            runs.append({"model": name, "description": names[name], "runtime": runtime, "test_accuracy": accuracy,
                         **speed})
            print(json.dumps(runs[-1]), flush=True)
    anchor = next(r for r in runs if (r["model"], r["runtime"]) == ("teacher", "eager"))
    for r in runs:
        r["speedup_vs_eager_teacher"] = round(r["rows_per_s"] / anchor["rows_per_s"], 2)
        r["accuracy_change_vs_teacher_points"] = round(100 * (r["test_accuracy"] - anchor["test_accuracy"]), 2)

    sha, dirty = provenance.git_state("lelp_lightning", "benchmarks/throughput/student_vs_teacher.py", "configs")
    record = {"benchmark": "student_vs_teacher", "git_sha": sha, "git_dirty": dirty, "command": " ".join(sys.argv),
              "note": args.note, "task": {"source": "Tweets(num_classes=2)", "max_rows": args.rows,
                                          "test_rows": len(test), "method": "quickstart LELP"},
              "threads": args.threads, "seconds": args.seconds, "machine": provenance.machine(),
              "versions": provenance.versions("torch", "lightning", "transformers", "onnxruntime", "onnx"),
              "runs": runs}
    path = provenance.write_record(RECORDS, sha, record)
    print(f"\n{provenance.cpu_name()}, {args.threads} threads; record {path.relative_to(REPO)}\n")
    print("| model | runtime | test accuracy | Δ vs teacher | rows/s @256 | × eager teacher | p50 ms @1 | p99 ms @1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['description']} | {r['runtime']} | {100 * r['test_accuracy']:.2f}% | "
              f"{r['accuracy_change_vs_teacher_points']:+.2f} | {r['rows_per_s']:,.0f} | {r['speedup_vs_eager_teacher']:,.1f}× | "
              f"{r['latency_ms_p50']:.2f} | {r['latency_ms_p99']:.2f} |")


if __name__ == "__main__":
    main()
