"""``lelp export``: a trained run's student as one ONNX graph, with its featuriser, labels and model card.

The graph reads what the run's featuriser emits and returns class probabilities (softmax of the logsumexp over
each class's S logits, as :meth:`~lelp_lightning.module.DistillModule.predict_step`), with a dynamic batch axis.
Nothing here knows a particular student or featuriser: the featuriser says what goes into the graph
(:meth:`~lelp_lightning.data.featurizers.Featurizer.export_spec`: ``featurizer.json``, the graph's inputs and
axes, an encoder inside the graph, files to copy beside it), the student gives the module from those inputs to its
logits (:meth:`~lelp_lightning.students.Student.export_module`), and :class:`ProbabilityGraph` appends the class
probabilities. The predictor rebuilds the inputs from raw rows with the input builder that ``featurizer.json``'s
``"kind"`` names (:class:`~lelp_lightning.serving.predictor.InputBuilder`); the graph is traced with that
builder's own arrays, so it sees what serving feeds it. Today: the hashed bag (padded ids / weights, hashed in
numpy), an MLP over a smaller sentence encoder (token ids in, the encoder and its pooling in the graph, the
encoder's ``tokenizer.json`` beside it), pixels (CNN or MLP, scaled in numpy).

The folder is written under a temporary name and renamed into place, so a half-written export is never read;
it replaces an earlier export's own files there and refuses a folder that holds anything else. A killed
export's staging folder is removed by the next export to the same place (never one of a live process).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from lelp_lightning.checkpoints import load_checkpoint
from lelp_lightning.core import SPLITS
from lelp_lightning.data.featurizers import ExportSpec
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import class_logits
from lelp_lightning.serving.card import write_card
from lelp_lightning.serving.predictor import FILES, Predictor, input_builders
from lelp_lightning.serving.timing import machine, measure

OPSET = 17  # a native LayerNormalization (17)


class ProbabilityGraph(nn.Module):
    """What the ONNX graph computes: the graph's inputs → ``logits`` (a student's export module) → the softmax of
    the logsumexp over each class's S logits."""

    def __init__(self, logits: nn.Module, num_classes: int):
        super().__init__()
        self.logits, self.num_classes = logits, num_classes

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(class_logits(self.logits(*inputs), self.num_classes), dim=-1)


def export_graph(student: nn.Module, num_classes: int, featurizer) -> tuple[ProbabilityGraph, ExportSpec]:
    """The module to export for ``student`` fed by ``featurizer``, and the featuriser's export spec; a featuriser
    or a pair that cannot export is one sentence."""
    spec = featurizer.export_spec()
    if spec.kind not in input_builders:
        raise LelpError(f"the featuriser {type(featurizer).__name__} exports the kind {spec.kind!r}, which has no "
                        f"predictor-side input builder (known: {', '.join(input_builders.names())}); register one: "
                        "class MyInputs(lelp_lightning.serving.predictor.InputBuilder, kind=...).")
    return ProbabilityGraph(student.export_module(spec), num_classes).eval(), spec


def load_student(config: Path, ckpt_path: Path):
    """The run's model (its student holding the checkpoint's weights) and data module, built from ``config``."""
    from lelp_lightning.runs import build_cli, hide_notices_a_user_cannot_act_on, run_sections

    for path, what in ((config, "--config"), (ckpt_path, "--ckpt_path")):
        if not path.is_file():
            raise LelpError(f"{what} {path} is not a file; expected the run's config.yaml and a checkpoint of it.")
    checkpoint = load_checkpoint(ckpt_path, "the .ckpt file a `lelp fit` run wrote (<run>/checkpoints/last.ckpt)")
    hide_notices_a_user_cannot_act_on()
    values = yaml.safe_load(config.read_text())
    if not isinstance(values, dict) or "model" not in values or "data" not in values:
        raise LelpError(f"{config} is not a run's config (no model and data sections); expected the config.yaml "
                        "that `lelp fit` saved in the run folder.")
    values = run_sections(values)  # not fit's own ckpt_path, weights_only
    values.setdefault("trainer", {})["logger"] = False  # building the trainer must not start a logger
    cli = build_cli(values, run=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LelpError(f"{ckpt_path} is not a Lightning checkpoint (no state_dict); expected the .ckpt file a "
                        "`lelp fit` run wrote (<run>/checkpoints/last.ckpt).")
    model = cli.model
    model.on_load_checkpoint(checkpoint)  # another C or S: one sentence
    saved = {k.removeprefix("student."): v for k, v in checkpoint["state_dict"].items() if k.startswith("student.")}
    wanted = model.student.state_dict()
    problems = [f"{k} is missing" for k in wanted if k not in saved]
    problems += [f"{k} is not in this student" for k in saved if k not in wanted]
    problems += [f"{k} is {list(saved[k].shape)} there but {list(v.shape)} here" for k, v in wanted.items()
                 if k in saved and saved[k].shape != v.shape]
    if problems:
        raise LelpError(f"the checkpoint {ckpt_path} holds another student than {config} builds "
                        f"({'; '.join(problems[:3])}); export a run with its own config and checkpoint "
                        "(--config <run>/config.yaml --ckpt_path <run>/checkpoints/last.ckpt).")
    model.student.load_state_dict(saved)
    return model.eval(), cli.datamodule, cli.config


QUANTIZE = ("none", "int8")


def export(config: str | Path, ckpt_path: str | Path, output: str | Path, opset: int = OPSET,
           bench_seconds: float = 2.0, command: str = "", quantize: str = "none") -> dict:
    """Export the run of ``config`` with the weights of ``ckpt_path`` to the folder ``output``; returns the card.

    ``quantize="int8"``: onnxruntime's dynamic quantisation (int8 weights, activations quantised per run), smaller
    and, for an encoder student, faster, at an accuracy cost the card's exported test accuracy shows."""
    if quantize not in QUANTIZE:
        raise LelpError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}.")
    config, ckpt_path, output = Path(config), Path(ckpt_path), Path(output)
    _remove_stale_stages(output)
    model, datamodule, run_config = load_student(config, ckpt_path)
    graph, spec = export_graph(model.student, model.num_classes, datamodule.featurizer)
    own = _own_names(output, spec)
    _check_output(output, own)
    source = datamodule.source
    test = source.split("test")

    stage = output.with_name(f".{output.name}.tmp{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        write_graph(graph, spec, test.texts[:2], stage, opset)
        if quantize == "int8":
            _quantize_int8(stage / "student.onnx")
        (stage / "labels.json").write_text(json.dumps({"labels": list(source.class_names)}, indent=2))
        (stage / "model_card.json").write_text("{}")  # placeholder, so that the folder loads for the measurement
        predictor = Predictor.load(stage)
        probabilities = predictor.predict_proba(test.texts)
        speed = measure(predictor.predict_proba, test.texts, seconds=bench_seconds) if bench_seconds > 0 else None
        card = _card(run_config, config, ckpt_path, source, model, spec, stage, opset, command, speed,
                     float((probabilities.argmax(1) == np.asarray(test.labels)).mean()), quantize)
        write_card(card, stage)
        _swap_into_place(stage, output, own)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return card


def write_graph(graph: ProbabilityGraph, spec: ExportSpec, rows, folder: Path, opset: int = OPSET) -> None:
    """``student.onnx``, ``featurizer.json`` and the featuriser's files in ``folder``: the graph traced with the
    input builder's arrays for ``rows`` (a few raw rows)."""
    for name, src in spec.files.items():
        shutil.copyfile(src, folder / name)
    (folder / "featurizer.json").write_text(json.dumps(spec.config, indent=2))
    example = Predictor.featurizer_for(spec.config, folder)(rows)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        torch.onnx.export(graph.eval(), tuple(torch.from_numpy(example[n]) for n in spec.inputs),
                          str(folder / "student.onnx"), dynamo=False, opset_version=opset,
                          input_names=spec.inputs, output_names=["probabilities"],
                          dynamic_axes={**spec.dynamic_axes, "probabilities": {0: "batch"}})


def _quantize_int8(graph: Path) -> None:
    """Replace the fp32 graph by its dynamically quantised int8 form (MatMul, Gather and friends)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = graph.with_name("fp32.onnx")
    os.replace(graph, fp32)
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its "pre-process first" advice
    quantize_dynamic(str(fp32), str(graph), weight_type=QuantType.QInt8)
    fp32.unlink()


def _own_names(output: Path, spec: ExportSpec) -> set[str]:
    """The names of the files an export writes in ``output``: the predictor's files, ``model_card.md``, the files
    this featuriser's export spec copies, and those an earlier export there copied (the file names its
    ``featurizer.json`` gives, such as an encoder's ``tokenizer.json``)."""
    own = {*FILES, "model_card.md", *spec.files}
    try:
        earlier = json.loads((output / "featurizer.json").read_text())
    except (OSError, ValueError):
        earlier = None
    if isinstance(earlier, dict):
        own |= {v for v in earlier.values() if isinstance(v, str) and v and Path(v).name == v and v not in (".", "..")}
    return own


def _unexpected(output: Path, own: set[str]) -> list[str]:
    """The entries of the folder ``output`` that are not an export's own files (sorted; a folder ends in ``/``)."""
    return sorted(e.name + ("/" if e.is_dir() and not e.is_symlink() else "") for e in output.iterdir()
                  if e.name not in own or e.is_symlink() or not e.is_file())


def _check_output(output: Path, own: set[str]) -> None:
    """Refuse an ``output`` that is a file or holds anything but an export's own files (an empty or missing folder
    is fine): an export replaces an earlier export's files and never deletes anything it did not write."""
    if output.exists() and not output.is_dir():
        raise LelpError(f"--output {output} is a file; give a new or empty folder (or an earlier export's).")
    unexpected = _unexpected(output, own) if output.exists() else []
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", …" if len(unexpected) > 5 else "")
        raise LelpError(f"--output {output} holds {len(unexpected)} entr{'y' if len(unexpected) == 1 else 'ies'} "
                        f"that {'is' if len(unexpected) == 1 else 'are'} not an export's own files ({shown}); give a "
                        "new or empty folder, or an earlier export's (whose files are replaced).")


_STAGES = re.compile(r"\.(?P<name>.+)\.(?P<what>tmp|old)(?P<pid>\d+)")


def _alive(pid: int) -> bool:
    """Whether the process ``pid`` exists (one of another user counts: it cannot be signalled but is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_stages(output: Path) -> None:
    """What an export of ``output`` that was killed left beside it: its staging folder ``.<name>.tmp<pid>`` is
    removed, and an earlier export it had moved aside (``.<name>.old<pid>``) is put back in place (or removed, when
    ``output`` exists again). Only those of dead processes: a live export's are never touched."""
    if not output.parent.is_dir():
        return
    for entry in output.parent.iterdir():
        match = _STAGES.fullmatch(entry.name)
        if match is None or match["name"] != output.name or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        if match["what"] == "old" and not output.exists():
            os.replace(entry, output)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _swap_into_place(stage: Path, output: Path, own: set[str]) -> None:
    """Rename the finished folder to ``output``, replacing an earlier export there (checked again just before: a
    folder that holds anything else is refused and left as it is)."""
    old = output.with_name(f".{output.name}.old{os.getpid()}")
    if output.exists():
        _check_output(output, own)
        os.replace(output, old)
        if _unexpected(old, own):  # written there since the check: put it back as it was
            os.replace(old, output)
            _check_output(output, own)
    try:
        os.replace(stage, output)
    except OSError:
        if old.exists() and not output.exists():
            os.replace(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _card(run_config, config: Path, ckpt_path: Path, source, model, spec: ExportSpec, folder: Path,
          opset: int, command: str, speed: dict, exported_accuracy: float, quantize: str) -> dict:
    """What ``model_card.json`` holds (and ``model_card.md`` shows)."""
    import onnxruntime

    as_dict = json.loads(json.dumps(run_config.as_dict(), default=str))
    data, model_cfg = as_dict.get("data", {}), as_dict.get("model", {})
    summary_path = config.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    graph = folder / "student.onnx"
    student_params = sum(p.numel() for p in model.student.parameters())
    encoder_params = sum(p.numel() for p in spec.features.parameters()) if spec.features is not None else None
    objectives = [{"class_path": o.get("class_path"), **o.get("init_args", {})}
                  for o in model_cfg.get("objectives") or []]
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "run": {"config": str(config), "checkpoint": str(ckpt_path), "summary": str(summary_path) if summary else None},
        "teacher": data.get("teacher"),
        "method": {"strategy": data.get("strategy"), "objectives": objectives,
                   "num_subclasses": model.num_subclasses, "representation": data.get("representation"),
                   "probe": data.get("probe"), "fit_labels": data.get("fit_labels"),
                   "num_labeled": data.get("num_labeled")},
        "data": {"source": data.get("source"), "classes": list(source.class_names),
                 "split_sizes": {s: len(source.split(s)) for s in SPLITS}},
        "student": {"network": model_cfg.get("student"), "featurizer": data.get("featurizer"),
                    "parameters": student_params, "encoder_parameters": encoder_params},
        "accuracy": {"student_test": (summary.get("student") or {}).get("test_accuracy"),
                     "teacher_test": (summary.get("teacher") or {}).get("test_accuracy"),
                     "majority_class_rate": summary.get("majority_class_rate"),
                     "exported_test": exported_accuracy},
        "onnx": {"file": "student.onnx", "bytes": graph.stat().st_size, "opset": opset,
                 "quantization": "int8 dynamic (onnxruntime quantize_dynamic, QInt8 weights)" if quantize == "int8"
                 else None,
                 "inputs": spec.inputs, "output": "probabilities", "dynamic_axis": "batch",
                 "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "speed": speed and {"machine": machine(), "path": "raw input → probabilities (featuriser + onnxruntime)",
                            **speed},
    }

