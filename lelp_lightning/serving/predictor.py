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
    (the encoder's own ``tokenizer.json``, truncated to ``max_length``, padded on the right to the batch's longest)."""

    def __init__(self, spec: dict, folder: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / spec["tokenizer"]))
        self.tokenizer.enable_truncation(int(spec["max_length"]))
        self.tokenizer.no_padding()
        self.pad_id, self.inputs = int(spec["pad_id"]), spec["inputs"]

    def encode(self, texts: list[str]) -> list:
        """Each text's tokens, unpadded (their count orders a batch)."""
        return self.tokenizer.encode_batch(texts)

    def pad(self, encodings: list) -> dict[str, np.ndarray]:
        """Encodings → the graph's [N, longest] arrays: pad id, attention 0 and token type 0 after each text."""
        width = max(len(e.ids) for e in encodings)
        arrays = {"input_ids": np.full((len(encodings), width), self.pad_id, np.int64),
                  "attention_mask": np.zeros((len(encodings), width), np.int64),
                  "token_type_ids": np.zeros((len(encodings), width), np.int64)}
        for row, e in enumerate(encodings):
            n = len(e.ids)
            arrays["input_ids"][row, :n], arrays["attention_mask"][row, :n] = e.ids, e.attention_mask
            arrays["token_type_ids"][row, :n] = e.type_ids
        return {name: arrays[name] for name in self.inputs}

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.pad(self.encode(texts))


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
        if self.kind == "sentence_encoder":
            # tokenised once; texts of similar token counts run together (a stable order, so the result does not
            # depend on it), in runs of the training encoder's batch size, which pad less than one large batch
            encodings = self.featurize.encode(list(inputs))
            order = np.argsort([len(e.ids) for e in encodings], kind="stable")
            batch_size = min(batch_size, int(self.spec.get("batch_rows", batch_size)))
            for lo in range(0, len(inputs), batch_size):
                index = order[lo: lo + batch_size]
                out[index] = self.session.run(["probabilities"], self.featurize.pad([encodings[i] for i in index]))[0]
            return out
        for lo in range(0, len(inputs), batch_size):
            chunk = inputs[lo: lo + batch_size]
            out[lo: lo + batch_size] = self.session.run(["probabilities"], self.featurize(chunk))[0]
        return out

    def predict(self, inputs: Sequence[str] | np.ndarray, batch_size: int = 256) -> list[str]:
        """The most probable class label of each input."""
        return [self.labels[i] for i in self.predict_proba(inputs, batch_size).argmax(1)]
