"""Run an exported student with numpy and onnxruntime only (and the ``tokenizers`` package for an encoder student).

Nothing here imports torch or Lightning: ``from lelp_lightning.serving import Predictor`` is what a service needs.
An export folder (written by ``lelp export``) holds ``student.onnx`` (student inputs → class probabilities),
``featurizer.json`` (the step from raw input to those inputs, done here), ``labels.json`` and the model card.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lelp_lightning.errors import LelpError
from lelp_lightning.serving.hashing import HashedNgrams

FILES = ("student.onnx", "featurizer.json", "labels.json", "model_card.json")


def export_spec(folder: Path) -> dict:
    """The featuriser spec of the export in ``folder``, refused unless the folder is a complete export."""
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise LelpError(f"{folder} is not a complete export folder (missing {', '.join(missing)}); "
                        "write one with `lelp export --config <run>/config.yaml --ckpt_path <ckpt> --output <dir>`.")
    spec = json.loads((folder / "featurizer.json").read_text())
    if spec.get("kind") not in _FEATURIZERS:
        raise LelpError(f"{folder / 'featurizer.json'} names the featuriser kind {spec.get('kind')!r}; "
                        f"expected one of {sorted(_FEATURIZERS)}.")
    return spec


class _Hashed:
    """Texts → the padded hashed bag (ids, weights) of :class:`~lelp_lightning.serving.hashing.HashedNgrams`."""

    def __init__(self, spec: dict, folder: Path):
        self.bags = HashedNgrams(spec["num_buckets"], spec["max_ngram"], spec["lowercase"], spec["token_pattern"])

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.bags(texts)


class _Tokens:
    """Texts → token ids for the encoder inside the graph, tokenised as the training encoder tokenised them
    (the encoder's own ``tokenizer.json``, truncated to ``max_length``, padded to the batch's longest)."""

    def __init__(self, spec: dict, folder: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / spec["tokenizer"]))
        self.tokenizer.enable_truncation(int(spec["max_length"]))
        self.tokenizer.enable_padding(pad_id=int(spec["pad_id"]), pad_token=spec["pad_token"])
        self.inputs = spec["inputs"]

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encoded = self.tokenizer.encode_batch(texts)
        arrays = {"input_ids": [e.ids for e in encoded], "attention_mask": [e.attention_mask for e in encoded],
                  "token_type_ids": [e.type_ids for e in encoded]}
        return {name: np.asarray(arrays[name], dtype=np.int64).reshape(len(texts), -1) for name in self.inputs}


class _Pixels:
    """uint8 images [N,H,W] → floats in [0,1], then ``(x - mean) / std``, shaped as the student reads them."""

    def __init__(self, spec: dict, folder: Path):
        self.shape, self.flatten = [int(s) for s in spec["image_shape"]], bool(spec["flatten"])
        self.mean, self.std = np.float32(spec["mean"]), np.float32(spec["std"])

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = images.astype(np.float32)[:, None] / np.float32(255)
        if (self.mean, self.std) != (0.0, 1.0):
            x = (x - self.mean) / self.std
        return {"pixels": x.reshape(len(x), -1) if self.flatten else x}


_FEATURIZERS = {"hashed_ngrams": _Hashed, "sentence_encoder": _Tokens, "pixels": _Pixels}


class Predictor:
    """An exported student: raw texts (or uint8 images) in, class probabilities or labels out."""

    def __init__(self, folder: Path, session, featurize, spec: dict, labels: list[str], card: dict):
        self.folder, self.session, self.featurize, self.spec = folder, session, featurize, spec
        self.labels, self.card = labels, card
        self.kind = spec["kind"]

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> Predictor:
        """The student exported to ``folder``; ``threads``: onnxruntime's intra-op threads (default: all cores)."""
        import onnxruntime as ort

        folder = Path(folder)
        spec = export_spec(folder)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(folder / "student.onnx"), options, providers=["CPUExecutionProvider"])
        labels = json.loads((folder / "labels.json").read_text())["labels"]
        card = json.loads((folder / "model_card.json").read_text())
        return cls(folder, session, cls.featurizer_for(spec, folder), spec, labels, card)

    @staticmethod
    def featurizer_for(spec: dict, folder: Path):
        """The raw-input step that ``featurizer.json`` (``spec``) describes: inputs → the graph's input arrays."""
        return _FEATURIZERS[spec["kind"]](spec, Path(folder))

    def _check(self, inputs) -> None:
        if self.kind == "pixels":
            shape = list(self.spec["image_shape"])
            if not isinstance(inputs, np.ndarray) or inputs.ndim != 3 or list(inputs.shape[1:]) != shape:
                got = list(inputs.shape) if isinstance(inputs, np.ndarray) else type(inputs).__name__
                raise LelpError(f"this student reads uint8 images of shape [N, {shape[0]}, {shape[1]}], got {got}.")
        elif isinstance(inputs, str) or not all(isinstance(t, str) for t in inputs):
            raise LelpError("this student reads a list of strings; got "
                            f"{'one string' if isinstance(inputs, str) else 'a list with a non-string item'}.")

    def predict_proba(self, inputs: Sequence[str] | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities [N, C] (float32, columns in the order of ``labels``), ``batch_size`` rows per run."""
        self._check(inputs)
        out = np.zeros((len(inputs), len(self.labels)), np.float32)
        order = np.arange(len(inputs))
        if self.kind == "sentence_encoder":
            # token batches pad to their longest text: similar lengths together (stable, so the result is the same),
            # in runs of the training encoder's batch size, which pad less than one run of a large batch
            order = np.argsort([len(t) for t in inputs], kind="stable")
            batch_size = min(batch_size, int(self.spec.get("batch_rows", batch_size)))
        for lo in range(0, len(inputs), batch_size):
            index = order[lo: lo + batch_size]
            chunk = inputs[index] if isinstance(inputs, np.ndarray) else [inputs[i] for i in index]
            out[index] = self.session.run(["probabilities"], self.featurize(chunk))[0]
        return out

    def predict(self, inputs: Sequence[str] | np.ndarray, batch_size: int = 256) -> list[str]:
        """The most probable class label of each input."""
        return [self.labels[i] for i in self.predict_proba(inputs, batch_size).argmax(1)]
