"""The teacher built from a frozen sentence encoder (:mod:`lelp_lightning.encoders`) and a trained MLP head.

The encoder's outputs are cached per split, so the head can be retrained (other sizes, seeds, label budgets)
without running the encoder again.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lelp_lightning import fileio
from lelp_lightning.cache import PassTarget, TeacherCache, cache_key
from lelp_lightning.core import SPLITS, Source, SplitData, fingerprint_of, rows_fingerprint
from lelp_lightning.encoders import SentenceEncoder
from lelp_lightning.teachers.base import Teacher


class _Head(nn.Module):
    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float):
        super().__init__()
        self.body = (nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden
                     else nn.Identity())
        self.out = nn.Linear(hidden or in_dim, num_classes)

    def forward(self, x):
        h = self.body(x)
        return h, self.out(h)


class SentenceEncoderTeacher(Teacher, name="sentence_encoder",
                             description="A frozen sentence encoder and an MLP head trained on the training split."):
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

    def features(self, source: Source, split: str, cache: TeacherCache) -> np.ndarray:
        """The encoder's output for one split, from the cache (built on first use, with a progress bar)."""
        return self.encoder.features(source, split, cache)

    def pass_targets(self, source: Source, cache: TeacherCache) -> list[PassTarget]:
        """The encoder features of every split not cached yet: the expensive, label-free part of this teacher.

        A multi-process pass fills them in length-bucketed blocks; :meth:`fit` then trains the head on them
        (a cheap pass over cached features) and the head's outputs fill the teacher's own entries.
        """
        return [self.encoder.feature_target(source, split) for split in SPLITS
                if not cache.exists(self.encoder.feature_key(source, split))]

    def representations(self) -> dict[str, str]:
        return {"encoder": f"the frozen encoder's output ({self.encoder.model}), before the head"}

    def representation_key(self, name: str, source: Source, split: str, key: str) -> str:
        return self.encoder.feature_key(source, split) if name == "encoder" else key

    def representation_target(self, name: str, source: Source, split: str, key: str) -> PassTarget:
        if name != "encoder":
            return super().representation_target(name, source, split, key)
        return self.encoder.feature_target(source, split)  # the entry the head trains on: cached once

    def fit(self, source: Source, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
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
            fileio.atomic_write(head_file, lambda handle: torch.save(self._head.state_dict(), handle))
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

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        out = self._require_head().out
        return out.weight.detach().numpy().copy(), out.bias.detach().numpy().copy()
