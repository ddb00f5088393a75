"""A transformer student that starts from a pretrained encoder: the encoder (optionally truncated to k of its layers),
fine-tuned end to end on the distillation targets, pooled over the attended tokens, then a C·S linear head.

It reads :class:`~lelp_lightning.data.token_featurizer.EncoderTokenFeaturizer`'s token ids of the same encoder.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lelp_lightning.encoders.sentence import resolve_model_path
from lelp_lightning.errors import LelpError
from lelp_lightning.students.networks import Student

LAYER_RULES = ("first", "every_other")
POOLINGS = ("mean", "cls")


def chosen_layers(total: int, num_layers: int | None, layers: str | list[int], encoder: str) -> list[int]:
    """The indices of the encoder's ``total`` layers the student keeps, in order: ``first`` k; ``every_other``, k
    spread evenly from the first (``i·total // k``: one layer out of two when k = total / 2, the rule DistilBERT
    initialises its student from BERT with, Sanh et al. 2019); or an explicit increasing list."""
    if isinstance(layers, str):
        if layers not in LAYER_RULES:
            raise LelpError(f"transformer's layers is {layers!r}; expected one of {LAYER_RULES} or a list of layer "
                            "indices.")
        k = total if num_layers is None else num_layers
        if not 1 <= k <= total:
            raise LelpError(f"transformer's num_layers is {k}, but the encoder {encoder!r} has {total} layers; "
                            f"expected 1 to {total} (or null for all of them).")
        return list(range(k)) if layers == "first" else [i * total // k for i in range(k)]
    keep = [int(i) for i in layers]
    if not keep or any(not 0 <= i < total for i in keep) or any(np.diff(keep) <= 0):
        raise LelpError(f"transformer's layers {keep} must be increasing layer indices from 0 to {total - 1} (the "
                        f"encoder {encoder!r} has {total} layers).")
    if num_layers is not None and num_layers != len(keep):
        raise LelpError(f"transformer's num_layers is {num_layers} but layers lists {len(keep)} layers; set "
                        "num_layers to null (or to the list's length).")
    return keep


@contextlib.contextmanager
def _quiet_loading():
    """transformers' weight-loading progress bar and notices off (a student is built in every command)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def truncate(model: nn.Module, keep: list[int]) -> nn.Module:
    """``model`` with only the layers ``keep`` of its layer stack (the ``ModuleList`` of
    ``config.num_hidden_layers`` blocks), in order; ``config.num_hidden_layers`` follows."""
    total = model.config.num_hidden_layers
    found = next(((name, module) for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == total), None)
    if found is None:
        raise LelpError(f"{type(model).__name__} has no list of its {total} layers to keep layers of; use an "
                        "encoder with a BERT-like layer stack, or num_layers: null.")
    name, stack = found
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, nn.ModuleList([stack[i] for i in keep]))
    model.config.num_hidden_layers = len(keep)
    return model


def same_model(a: str, b: str) -> bool:
    """Whether two encoder names (paths or bundled names) are the same local folder."""
    return Path(resolve_model_path(a)).resolve() == Path(resolve_model_path(b)).resolve()


class TokenExport(nn.Module):
    """The transformer student in an exported graph: the token-id inputs, by name, → its logits."""

    def __init__(self, student: TransformerStudent, inputs: list[str]):
        super().__init__()
        self.student, self.inputs = student, inputs

    def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
        return self.student(dict(zip(self.inputs, arrays, strict=True)))


class TransformerStudent(Student, name="transformer",
                         description="A pretrained encoder truncated to k layers (every other by default), fine-tuned "
                                     "end to end, mean-pooled, then a C·S linear head."):
    """A Hugging Face encoder folder (``encoder``: a path or a bundled name) with ``num_layers`` of its layers
    (``None``: all), chosen by ``layers`` (``first``, ``every_other`` or a list of indices, see
    :func:`chosen_layers`), fine-tuned end to end; ``pooling`` ``mean`` over the attended tokens (as the sentence
    encoders pool) or the first token's state (``cls``), ``dropout`` on the pooled embedding (the encoder keeps its
    own config's dropout), then a C·S linear head.

    The pretrained weights are loaded here (a checkpoint restores over them), so a run's config rebuilds the same
    module for resume and export. ``input_dim`` is the featuriser's vocabulary size; it must fit the encoder's token
    table. ``body_lr`` / ``head_lr``: the encoder's and the head's learning rates (default: the model's ``lr``);
    a pretrained body usually wants a small rate (5e-5) and the fresh head a larger one (1e-3).
    """

    def __init__(self, input_dim: int = 30522, num_outputs: int = 2, encoder: str = "all-MiniLM-L6-v2",
                 num_layers: int | None = 3, layers: str | list[int] = "every_other", pooling: str = "mean",
                 dropout: float = 0.1, body_lr: float | None = None, head_lr: float | None = None):
        super().__init__(input_dim, num_outputs)
        if pooling not in POOLINGS:
            raise LelpError(f"transformer's pooling is {pooling!r}; expected one of {POOLINGS}.")
        if not 0 <= dropout < 1:
            raise LelpError(f"transformer's dropout must be in [0, 1), got {dropout}.")
        for what, lr in (("body_lr", body_lr), ("head_lr", head_lr)):
            if lr is not None and not lr > 0:
                raise LelpError(f"transformer's {what} must be > 0 (or null for the model's lr), got {lr}.")
        from transformers import AutoConfig, AutoModel

        path = resolve_model_path(encoder)
        config = AutoConfig.from_pretrained(path)
        keep = chosen_layers(config.num_hidden_layers, num_layers, layers, encoder)
        if input_dim > config.vocab_size:
            raise LelpError(f"the transformer student reads token ids below its encoder's vocabulary size "
                            f"({config.vocab_size}), but input_dim is {input_dim}; pair it with "
                            f"EncoderTokenFeaturizer of the same encoder ({encoder!r}).")
        with _quiet_loading():
            body = AutoModel.from_pretrained(path).train()  # from_pretrained gives eval mode; Lightning keeps modes
        if getattr(body, "pooler", None) is not None:
            body.pooler = None  # BERT's tanh pooler is not used: parameters without gradients would trouble DDP
        self.body = truncate(body, keep)
        self.encoder, self.layers, self.pooling = encoder, keep, pooling
        self.body_lr, self.head_lr = body_lr, head_lr
        self.dropout = nn.Dropout(dropout)
        self.embedding_dim = config.hidden_size
        self.head = nn.Linear(self.embedding_dim, num_outputs)

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.body(**inputs).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.dropout(pooled)

    def start_from(self, featurizer) -> None:
        """The weights are the pretrained encoder's already; refuse a featuriser whose ids are not its vocabulary."""
        if getattr(featurizer, "kind", None) != "encoder_tokens":
            raise LelpError(f"the transformer student reads its encoder's token ids, but the run's featuriser is "
                            f"{type(featurizer).__name__}; use EncoderTokenFeaturizer with encoder: {self.encoder}.")
        if not same_model(featurizer.encoder, self.encoder):
            raise LelpError(f"the transformer student's encoder {self.encoder!r} is not the featuriser's "
                            f"{featurizer.encoder!r}; give both the same encoder, whose tokens the student reads.")

    def dense_parameter_groups(self, lr: float) -> list[dict]:
        """Two AdamW groups: the encoder at ``body_lr`` and the head at ``head_lr`` (each the model's ``lr`` when
        unset)."""
        body = {"params": list(self.body.parameters())}
        head = {"params": list(self.head.parameters())}
        for group, own in ((body, self.body_lr), (head, self.head_lr)):
            if own is not None:
                group["lr"] = own
        return [body, head]

    def export_module(self, spec) -> nn.Module:
        """Token ids → logits, on a copy with plain (eager) attention: tracing leaves the module it traced unusable
        in eager mode, and the attention kernels of training do not all export."""
        if spec.kind != "encoder_tokens":
            raise LelpError(f"the transformer student reads its encoder's token ids, but the {spec.kind} featuriser "
                            f"feeds it {spec.feeds} inputs; pair it with EncoderTokenFeaturizer.")
        if not same_model(spec.config["encoder"], self.encoder):
            raise LelpError(f"the transformer student's encoder {self.encoder!r} is not the featuriser's "
                            f"{spec.config['encoder']!r}; export a run whose featuriser tokenises for its encoder.")
        traced = copy.deepcopy(self).eval()
        traced.body.set_attn_implementation("eager")
        return TokenExport(traced, spec.inputs)
