"""Objective base class, its registry, and the two formulas every objective shares."""

from __future__ import annotations

import torch
from torch import nn

from lelp_lightning.errors import LelpError
from lelp_lightning.registry import Registry

objectives = Registry("objective", "lelp_lightning.objectives")


def subclass_targets(teacher_logits: torch.Tensor, z: torch.Tensor, tau: float, beta: float) -> torch.Tensor:
    """p[c,s] = softmax(f/τ)[c] · softmax(z[c,:]/β)[s], shape [B,C,S]; sums over s to softmax(f/τ)."""
    return torch.softmax(teacher_logits / tau, dim=-1).unsqueeze(-1) * torch.softmax(z / beta, dim=-1)


def class_logits(student_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class logits from a C·S head: logsumexp over each class's S logits (identity when S = 1)."""
    B = student_logits.shape[0]
    return torch.logsumexp(student_logits.view(B, num_classes, -1), dim=-1)


class Objective(nn.Module):
    """One loss term: ``forward(student_logits [B,C·S], batch) -> scalar``; ``weight`` scales it in the sum.

    Subclasses register a short name: ``class MyLoss(Objective, name="mine", description="...")``.
    ``requires`` names the extra batch keys it reads (e.g. ``teacher_embedding``), so the data module
    only ships those when asked.
    """

    requires: tuple[str, ...] = ()

    def __init_subclass__(cls, name: str | None = None, description: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            objectives.register(cls, name, description or "")
            cls.registered_name = name

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if weight < 0:
            raise LelpError(f"{type(self).__name__}.weight must be >= 0, got {weight}.")
        self.weight = weight

    @property
    def log_name(self) -> str:
        return getattr(self, "registered_name", type(self).__name__.lower())


def check_positive(owner: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise LelpError(f"{owner}.{key} must be > 0, got {value}.")
