"""Student inputs from a smaller frozen sentence encoder: the paper's "MLP on frozen sentence embeddings" student.

The features cost a pass of the encoder (about 90 texts/s for MiniLM on 2 CPU cores), so they are kept in the
data module's cache as the encoder's ``encoder-`` entry of each split (keyed by the encoder's and the split's
fingerprints; resumable, checksummed): built once, memory-mapped on every later run, and the very entry a
:class:`~lelp_lightning.teachers.SentenceEncoderTeacher` with the same encoder settings reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lelp_lightning.cache import TeacherCache
from lelp_lightning.core import SPLITS, Source, fingerprint_of
from lelp_lightning.data.featurizers import DenseInputs, ExportSpec, Featurizer
from lelp_lightning.encoders import SentenceEncoder
from lelp_lightning.encoders.sentence import resolve_model_path
from lelp_lightning.errors import LelpError


class MeanPooledEncoder(nn.Module):
    """The encoder inside an exported graph: token ids → mean pooling over the attended tokens (→ L2 norm), the
    features :class:`~lelp_lightning.encoders.SentenceEncoder` gave the student in training."""

    def __init__(self, encoder: nn.Module, normalize: bool):
        super().__init__()
        self.encoder, self.normalize = encoder, normalize

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def _normalizes(path: Path) -> bool:
    """Whether the sentence-transformers model at ``path`` L2-normalises its output (as SentenceEncoder reads it)."""
    modules = path / "modules.json"
    return modules.is_file() and any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


class SentenceEncoderFeaturizer(Featurizer):
    """Each text becomes the (mean-pooled) output of ``encoder``; ``input_dim`` is read from the model's config."""

    kind = "sentence_encoder"

    def __init__(self, encoder: str = "all-MiniLM-L6-v2", max_length: int = 128, batch_size: int = 64,
                 precision: str = "fp32"):
        self.encoder = SentenceEncoder(encoder, max_length, batch_size, precision)

    @property
    def input_dim(self) -> int:
        return self.encoder.embedding_dim

    def fingerprint(self) -> str:
        return fingerprint_of("SentenceEncoderFeaturizer", {"encoder": self.encoder.fingerprint()})

    def transform(self, texts: list[str]) -> DenseInputs:
        """Features of ``texts`` computed now, without a cache (a few texts outside a data module)."""
        return DenseInputs(self.encoder.embed_all(list(texts)))

    def prepare(self, source: Source, cache: TeacherCache) -> None:
        for split in SPLITS:
            self.encoder.features(source, split, cache)

    def featurize(self, source: Source, split: str, cache: TeacherCache) -> DenseInputs:
        return DenseInputs(self.encoder.features(source, split, cache))

    def export_spec(self) -> ExportSpec:
        """Token ids into the graph, the encoder and its pooling inside it, so raw text goes in through the
        encoder's own ``tokenizer.json`` (copied beside the graph)."""
        from transformers import AutoModel, AutoTokenizer

        encoder = self.encoder
        path = resolve_model_path(encoder.model)
        if not (path / "tokenizer.json").is_file():
            raise LelpError(f"the encoder {encoder.model!r} has no tokenizer.json in {path}; the exported student "
                            "needs a fast tokenizer's tokenizer.json to tokenise raw text.")
        tokenizer = AutoTokenizer.from_pretrained(path)
        normalize = _normalizes(path)
        inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
        # a fresh copy with plain attention: tracing leaves the module it traced unusable in eager mode
        net = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
        return ExportSpec(
            {"kind": self.kind, "encoder": encoder.model, "max_length": encoder.max_length,
             "tokenizer": "tokenizer.json", "pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token,
             "normalize": normalize, "precision": "fp32", "batch_rows": encoder.batch_size, "inputs": inputs},
            {name: {0: "batch", 1: "tokens"} for name in inputs}, features=MeanPooledEncoder(net, normalize).eval(),
            files={"tokenizer.json": path / "tokenizer.json"})
