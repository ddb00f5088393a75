"""A Hugging Face sequence-classification model as the teacher: embedding = the input of its last linear layer."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lelp_lightning.cache import PassTarget, cache_key
from lelp_lightning.core import fingerprint_of
from lelp_lightning.encoders import resolve_model_path
from lelp_lightning.errors import LelpError
from lelp_lightning.teachers.base import Teacher


class HFSequenceClassifierTeacher(Teacher, name="hf_classifier",
                                  description="A Hugging Face sequence classifier, as it is "
                                              "(a checkpoint or a config)."):
    """Any ``AutoModelForSequenceClassification`` checkpoint (a local folder), or one built from ``config``.

    ``config`` (a dict of ``AutoConfig.for_model`` arguments, with ``model_type``) builds a randomly
    initialised model under ``seed``: useful for tests, no download. The classifier is the last
    ``nn.Linear`` with ``num_labels`` outputs; a forward hook reads its input as the embedding.
    """

    def __init__(self, model: str | None = None, config: dict | None = None, tokenizer: str | None = None,
                 max_length: int = 128, batch_size: int = 32, representation_layer: int = -1, seed: int = 0):
        if (model is None) == (config is None):
            raise LelpError("HFSequenceClassifierTeacher needs exactly one of 'model' (a local checkpoint folder) "
                            "or 'config' (arguments for a randomly initialised model).")
        self.model = model
        self.config = config
        self.tokenizer = tokenizer or model
        if self.tokenizer is None:
            raise LelpError("HFSequenceClassifierTeacher built from 'config' needs 'tokenizer' (a local folder "
                            "or 'all-MiniLM-L6-v2').")
        self.max_length = max_length
        self.batch_size = batch_size
        self.representation_layer = representation_layer
        self.seed = seed
        self._net = None

    def _load(self) -> nn.Module:
        if self._net is not None:
            return self._net
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(resolve_model_path(self.tokenizer))
        if self.model is not None:
            path = Path(self.model)
            if not path.is_dir():
                raise LelpError(f"teacher checkpoint folder {self.model!r} does not exist.")
            net = AutoModelForSequenceClassification.from_pretrained(path)
        else:
            cfg = dict(self.config)
            model_type = cfg.pop("model_type", None)
            if model_type is None:
                raise LelpError("HFSequenceClassifierTeacher.config needs a 'model_type' (e.g. 'bert').")
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                net = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(model_type, **cfg))
        net.eval()
        num_labels = net.config.num_labels
        linears = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
        if not linears:
            raise LelpError(f"found no final nn.Linear with {num_labels} outputs in the teacher model.")
        self._final = linears[-1]
        self._captured: list[torch.Tensor] = []
        self._final.register_forward_pre_hook(lambda _m, args: self._captured.append(args[0]))
        self._net = net
        return net

    def fingerprint(self) -> str:
        if self.model is not None:
            path = Path(self.model)
            files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()) \
                if path.is_dir() else []
            weights = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
        else:
            weights = None
        return fingerprint_of("HFSequenceClassifierTeacher", {"model": self.model, "config": self.config,
                                                              "weights": weights, "tokenizer": self.tokenizer,
                                                              "max_length": self.max_length, "seed": self.seed})

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        net = self._load()
        device = next(net.parameters()).device  # the CPU, or the device a Lightning teacher pass put it on
        batch = self._tok(texts, padding=True, truncation=True, max_length=self.max_length,
                          return_tensors="pt").to(device)
        self._captured.clear()
        logits = net(**batch).logits
        emb = self._captured[-1]
        if emb.dim() == 3:  # heads that pick a token inside (e.g. the first one) before the final layer
            emb = emb[:, 0]
        return emb.float().cpu().numpy(), logits.float().cpu().numpy()

    def representations(self) -> dict[str, str]:
        return {"hidden": f"layer {self.representation_layer}'s hidden states, averaged over the tokens"}

    def representation_key(self, name: str, source, split: str, key: str) -> str:
        return cache_key(key, f"layer={self.representation_layer}")

    def representation_target(self, name: str, source, split: str, key: str) -> PassTarget:
        if name != "hidden":
            return super().representation_target(name, source, split, key)
        data = source.split(split)
        dim = self._load().config.hidden_size
        return self._features_target(name, data, key, dim, {"split": split, "layer": self.representation_layer},
                                     lambda index: self.hidden_mean([data.texts[i] for i in index]))

    @torch.inference_mode()
    def hidden_mean(self, texts: list[str]) -> np.ndarray:
        """Layer ``representation_layer``'s hidden states of ``texts``, averaged over their (unpadded) tokens."""
        net = self._load()
        layers = net.config.num_hidden_layers + 1
        if not -layers <= self.representation_layer < layers:
            raise LelpError(f"representation_layer {self.representation_layer} is out of range: the teacher has "
                            f"{layers} hidden-state layers (0 = token embeddings, -1 = the last).")
        batch = self._tok(texts, padding=True, truncation=True, max_length=self.max_length,
                          return_tensors="pt").to(next(net.parameters()).device)
        hidden = net(**batch, output_hidden_states=True).hidden_states[self.representation_layer]
        self._captured.clear()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy()

    def modules(self) -> list[nn.Module]:
        return [self._load()]

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        self._load()
        b = self._final.bias if self._final.bias is not None else torch.zeros(self._final.out_features)
        return self._final.weight.detach().float().cpu().numpy().copy(), b.detach().float().cpu().numpy().copy()
