"""The model card of an export: ``model_card.json`` (every field) and ``model_card.md`` (the same, for people)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _name(entry) -> str:
    """``class_path`` (short) and ``init_args`` of a config entry as one line."""
    if not isinstance(entry, dict):
        return str(entry)
    args = ", ".join(f"{k}={v}" for k, v in (entry.get("init_args") or {}).items())
    return f"{str(entry.get('class_path', '')).rsplit('.', 1)[-1]}({args})"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render(card: dict) -> str:
    """``model_card.md`` from the card's fields."""
    method, data, student, acc = card["method"], card["data"], card["student"], card["accuracy"]
    onnx, speed = card["onnx"], card["speed"]
    objectives = "; ".join(_name({"class_path": o.get("class_path"),
                                  "init_args": {k: v for k, v in o.items() if k != "class_path"}})
                           for o in method["objectives"]) or "default (subclass_ce)"
    sizes = ", ".join(f"{k} {v}" for k, v in data["split_sizes"].items())
    encoder = f" + encoder {student['encoder_parameters']:,}" if student.get("encoder_parameters") else ""
    lines = [
        "# Model card: distilled student", "",
        f"Exported {card['created']} by `{card['command']}`", "",
        "## Model",
        f"- student: {_name(student['network'])}, {student['parameters']:,} parameters{encoder}",
        f"- featuriser: {_name(student['featurizer'])}",
        f"- teacher: {_name(card['teacher'])}",
        f"- strategy: {_name(method['strategy'])} (S = {method['num_subclasses']}, representation "
        f"{method['representation']}, probe {method['probe']})",
        f"- objectives (τ, β, α, weight): {objectives}",
        f"- file: `{onnx['file']}`, {onnx['bytes'] / 2**20:.1f} MiB, ONNX opset {onnx['opset']}, inputs "
        f"{', '.join(onnx['inputs'])} → {onnx['output']} (dynamic batch axis)"
        + (f"; quantised: {onnx['quantization']}" if onnx.get("quantization") else ""), "",
        "## Data",
        f"- source: {_name(data['source'])}; classes {', '.join(data['classes'])}",
        f"- split sizes: {sizes}" + (f"; labeled rows {method['num_labeled']}" if method.get("num_labeled") else ""),
        "", "## Test accuracy",
        "| model | accuracy |", "|---|---|",
        f"| student (run's summary.json) | {_percent(acc['student_test'])} |",
        f"| student (this export, onnxruntime) | {_percent(acc['exported_test'])} |",
        f"| teacher | {_percent(acc['teacher_test'])} |",
        f"| majority class | {_percent(acc['majority_class_rate'])} |", "",
        "## Speed on the exporting machine",
    ]
    if speed is None:
        return "\n".join([*lines, "Not measured (exported with --bench_seconds 0).", ""])
    return "\n".join([
        *lines, f"{speed['machine']['cpu']}, {speed['machine']['cores']} cores, onnxruntime {onnx['onnxruntime']}; "
        f"{speed['path']}:", "",
        f"- throughput at batch {speed['batch_size']}: {speed['rows_per_s']:,.0f} rows/s",
        f"- latency at batch 1: p50 {speed['latency_ms_p50']:.2f} ms, p99 {speed['latency_ms_p99']:.2f} ms", ""])


def write_card(card: dict, folder: Path) -> None:
    _atomic_write(folder / "model_card.md", render(card))
    _atomic_write(folder / "model_card.json", json.dumps(card, indent=2))
