"""``lelp export``: a trained run's student as one ONNX graph, with its featuriser, labels and model card.

The graph reads what the run's featuriser emits and returns class probabilities (softmax of the logsumexp over
each class's S logits, as :meth:`~lelp_lightning.module.DistillModule.predict_step`), with a dynamic batch axis:

* hashed bag: padded ``ids`` / ``weights`` [N, L] (ONNX has no EmbeddingBag: the bag is a Gather of the table rows
  and a batched MatMul with the weights, zero weights on the padding); the hashing runs outside, in numpy
  (``featurizer.json``);
* MLP over a smaller sentence encoder's features: token ids in, the encoder and its mean pooling inside the graph,
  so raw text goes in through the encoder's own ``tokenizer.json`` (copied beside the graph);
* pixels (CNN or MLP): scaled floats in; the scaling runs outside, in numpy (``featurizer.json``).

The folder is written under a temporary name and renamed into place, so a half-written export is never read.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from lelp_lightning.checkpoints import load_checkpoint
from lelp_lightning.core import SPLITS
from lelp_lightning.data.encoder_featurizer import SentenceEncoderFeaturizer
from lelp_lightning.data.featurizers import HashedNgramFeaturizer
from lelp_lightning.data.pixels import PixelFeaturizer
from lelp_lightning.encoders.sentence import resolve_model_path
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import class_logits
from lelp_lightning.serving.card import write_card
from lelp_lightning.serving.predictor import Predictor
from lelp_lightning.serving.timing import machine, measure
from lelp_lightning.students import HashedBagStudent

_RUN_SECTIONS = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler")
OPSET = 17  # a native LayerNormalization (17)


class _Probabilities(nn.Module):
    def __init__(self, student: nn.Module, num_classes: int):
        super().__init__()
        self.student, self.num_classes = student, num_classes

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(class_logits(logits, self.num_classes), dim=-1)


class BagGraph(_Probabilities):
    """A hashed-bag student on padded (ids, weights) [N, L]: each row's weighted sum of its table rows, then the rest.

    A Gather and a batched MatMul ([N,1,L] @ [N,L,D]) rather than a scatter-add over flat entries, which
    onnxruntime runs element by element (measured 18× slower at batch 256)."""

    def forward(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        bag = torch.matmul(weights.unsqueeze(1), self.student.embedding.weight[ids]).squeeze(1)
        return self.probabilities(self.student.head(self.student.body(bag)))


class DenseGraph(_Probabilities):
    """A student on dense features (pixels)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.probabilities(self.student(features))


class EncoderGraph(_Probabilities):
    """A student on a sentence encoder's features, the encoder included: token ids → mean pooling (→ L2 norm)."""

    def __init__(self, student: nn.Module, num_classes: int, encoder: nn.Module, normalize: bool):
        super().__init__(student, num_classes)
        self.encoder, self.normalize = encoder, normalize

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        return self.probabilities(self.student(pooled))


def featurizer_spec(featurizer) -> tuple[dict, dict]:
    """(``featurizer.json``, what else the folder needs: {file name: source path}) for the run's featuriser."""
    if isinstance(featurizer, HashedNgramFeaturizer):
        vectorizer = featurizer._vectorizer()
        return {"kind": "hashed_ngrams", "num_buckets": featurizer.num_buckets, "max_ngram": featurizer.max_ngram,
                "lowercase": featurizer.lowercase, "token_pattern": vectorizer.token_pattern,
                "hash": "MurmurHash3 x86 32-bit, seed 0, of each word n-gram's UTF-8 bytes; bucket = |h| mod "
                        "num_buckets (scikit-learn's HashingVectorizer with alternate_sign=False)",
                "weights": "per row, each bucket's count / the row's n-gram count (EmbeddingBag sum = mean)",
                "padding": "ids / weights are [N, L]: each row's entries, then bucket 0 at weight 0 to the batch's "
                           "longest row",
                "inputs": ["ids", "weights"]}, {}
    if isinstance(featurizer, SentenceEncoderFeaturizer):
        from transformers import AutoTokenizer

        encoder = featurizer.encoder
        path = resolve_model_path(encoder.model)
        if not (path / "tokenizer.json").is_file():
            raise LelpError(f"the encoder {encoder.model!r} has no tokenizer.json in {path}; the exported student "
                            "needs a fast tokenizer's tokenizer.json to tokenise raw text.")
        tokenizer = AutoTokenizer.from_pretrained(path)
        return {"kind": "sentence_encoder", "encoder": encoder.model, "max_length": encoder.max_length,
                "tokenizer": "tokenizer.json", "pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token,
                "normalize": _normalizes(path), "precision": "fp32", "batch_rows": encoder.batch_size,
                "inputs": [n for n in ("input_ids", "attention_mask", "token_type_ids")
                           if n in tokenizer.model_input_names]}, {"tokenizer.json": path / "tokenizer.json"}
    if isinstance(featurizer, PixelFeaturizer):
        return {"kind": "pixels", "image_shape": featurizer.image_shape, "flatten": featurizer.flatten,
                "mean": featurizer.mean, "std": featurizer.std,
                "scaling": "uint8 pixels / 255, then (x - mean) / std; shape [N,1,H,W], or [N,H·W] when flatten",
                "inputs": ["pixels"]}, {}
    raise LelpError(f"lelp export knows the featurisers HashedNgramFeaturizer, SentenceEncoderFeaturizer and "
                    f"PixelFeaturizer, not {type(featurizer).__name__}.")


def _normalizes(path: Path) -> bool:
    """Whether the sentence-transformers model at ``path`` L2-normalises its output (as SentenceEncoder reads it)."""
    modules = path / "modules.json"
    return modules.is_file() and any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


def _graph(student: nn.Module, num_classes: int, featurizer, spec: dict) -> tuple[nn.Module, dict]:
    """The module to export and its dynamic axes."""
    if spec["kind"] == "hashed_ngrams":
        if not isinstance(student, HashedBagStudent):
            raise LelpError(f"a hashed n-gram featuriser feeds a hashed_bag student, but this run's student is "
                            f"{type(student).__name__}.")
        return BagGraph(student, num_classes), {"ids": {0: "batch", 1: "entries"},
                                                "weights": {0: "batch", 1: "entries"}}
    if spec["kind"] == "sentence_encoder":
        from transformers import AutoModel

        # a fresh copy with plain attention: tracing leaves the module it traced unusable in eager mode
        net = AutoModel.from_pretrained(resolve_model_path(featurizer.encoder.model), attn_implementation="eager")
        axes = {name: {0: "batch", 1: "tokens"} for name in spec["inputs"]}
        return EncoderGraph(student, num_classes, net.eval(), spec["normalize"]), axes
    return DenseGraph(student, num_classes), {"pixels": {0: "batch"}}


def load_student(config: Path, ckpt_path: Path):
    """The run's model (its student holding the checkpoint's weights) and data module, built from ``config``."""
    from lelp_lightning.runs import build_cli, hide_notices_a_user_cannot_act_on

    for path, what in ((config, "--config"), (ckpt_path, "--ckpt_path")):
        if not path.is_file():
            raise LelpError(f"{what} {path} is not a file; expected the run's config.yaml and a checkpoint of it.")
    checkpoint = load_checkpoint(ckpt_path, "the .ckpt file a `lelp fit` run wrote (<run>/checkpoints/last.ckpt)")
    hide_notices_a_user_cannot_act_on()
    values = yaml.safe_load(config.read_text())
    if not isinstance(values, dict) or "model" not in values or "data" not in values:
        raise LelpError(f"{config} is not a run's config (no model and data sections); expected the config.yaml "
                        "that `lelp fit` saved in the run folder.")
    values = {k: v for k, v in values.items() if k in _RUN_SECTIONS}  # not fit's own ckpt_path, weights_only
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
    if output.exists() and any(output.iterdir()) and not (output / "model_card.json").is_file():
        raise LelpError(f"--output {output} exists and is not an export folder; give a new or empty folder (an "
                        "earlier export is replaced).")
    model, datamodule, run_config = load_student(config, ckpt_path)
    spec, extra = featurizer_spec(datamodule.featurizer)
    graph, axes = _graph(model.student, model.num_classes, datamodule.featurizer, spec)
    source = datamodule.source
    test = source.split("test")

    stage = output.with_name(f".{output.name}.tmp{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        for name, src in extra.items():
            shutil.copyfile(src, stage / name)
        featurize = Predictor.featurizer_for(spec, stage)
        example = featurize(test.texts[:2])
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
            torch.onnx.export(graph.eval(), tuple(torch.from_numpy(example[n]) for n in spec["inputs"]),
                              str(stage / "student.onnx"), dynamo=False, opset_version=opset,
                              input_names=spec["inputs"], output_names=["probabilities"],
                              dynamic_axes={**axes, "probabilities": {0: "batch"}})
        if quantize == "int8":
            _quantize_int8(stage / "student.onnx")
        (stage / "featurizer.json").write_text(json.dumps(spec, indent=2))
        (stage / "labels.json").write_text(json.dumps({"labels": list(source.class_names)}, indent=2))
        (stage / "model_card.json").write_text("{}")  # placeholder, so that the folder loads for the measurement
        predictor = Predictor.load(stage)
        probabilities = predictor.predict_proba(test.texts)
        speed = measure(predictor.predict_proba, test.texts, seconds=bench_seconds) if bench_seconds > 0 else None
        card = _card(run_config, config, ckpt_path, source, model, graph, spec, stage, opset, command, speed,
                     float((probabilities.argmax(1) == np.asarray(test.labels)).mean()), quantize)
        write_card(card, stage)
        _swap_into_place(stage, output)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return card


def _quantize_int8(graph: Path) -> None:
    """Replace the fp32 graph by its dynamically quantised int8 form (MatMul, Gather and friends)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = graph.with_name("fp32.onnx")
    os.replace(graph, fp32)
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its "pre-process first" advice
    quantize_dynamic(str(fp32), str(graph), weight_type=QuantType.QInt8)
    fp32.unlink()


def _swap_into_place(stage: Path, output: Path) -> None:
    """Rename the finished folder to ``output``, replacing an earlier export there."""
    old = output.with_name(f".{output.name}.old{os.getpid()}")
    if output.exists():
        os.replace(output, old)
    os.replace(stage, output)
    shutil.rmtree(old, ignore_errors=True)


def _card(run_config, config: Path, ckpt_path: Path, source, model, graph_module: nn.Module, spec: dict, folder: Path,
          opset: int, command: str, speed: dict, exported_accuracy: float, quantize: str) -> dict:
    """What ``model_card.json`` holds (and ``model_card.md`` shows)."""
    import onnxruntime

    as_dict = json.loads(json.dumps(run_config.as_dict(), default=str))
    data, model_cfg = as_dict.get("data", {}), as_dict.get("model", {})
    summary_path = config.parent / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    graph = folder / "student.onnx"
    student_params = sum(p.numel() for p in model.student.parameters())
    encoder = getattr(graph_module, "encoder", None)
    encoder_params = sum(p.numel() for p in encoder.parameters()) if encoder is not None else None
    objectives = [{"class_path": o.get("class_path"), **o.get("init_args", {})} for o in model_cfg.get("objectives") or []]
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
                 "inputs": spec["inputs"], "output": "probabilities", "dynamic_axis": "batch",
                 "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "speed": speed and {"machine": machine(), "path": "raw input → probabilities (featuriser + onnxruntime)",
                            **speed},
    }

