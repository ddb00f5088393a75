"""Objective base class, its registry, and the formulas several objectives share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lelp_lightning.core import UNLABELED, TeacherStatistics
from lelp_lightning.errors import LelpError
from lelp_lightning.registry import Registry

objectives = Registry("objective", "lelp_lightning.objectives")

STAGES = ("on", "off", "alone")


def subclass_targets(teacher_logits: torch.Tensor, z: torch.Tensor, tau: float, beta: float) -> torch.Tensor:
    """p[c,s] = softmax(f/τ)[c] · softmax(z[c,:]/β)[s], shape [B,C,S]; sums over s to softmax(f/τ)."""
    return torch.softmax(teacher_logits / tau, dim=-1).unsqueeze(-1) * torch.softmax(z / beta, dim=-1)


def class_logits(student_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class logits from a C·S head: logsumexp over each class's S logits (identity when S = 1)."""
    B = student_logits.shape[0]
    return torch.logsumexp(student_logits.view(B, num_classes, -1), dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the rows where ``mask`` holds; 0 (still in the graph) when no row does."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def labeled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE(y, softmax(logits)) averaged over the rows whose label is known (hidden labels are ``UNLABELED``)."""
    known = labels != UNLABELED
    per_row = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return masked_mean(per_row, known)


def soft_cross_entropy(target_probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-row −Σ_k p_k log softmax(logits)_k."""
    return -(target_probs * F.log_softmax(logits, dim=-1)).sum(-1)


class Objective(nn.Module):
    """One loss term: ``forward(student_logits [B,C·S], batch) -> scalar``; ``weight`` scales it in the sum.

    Subclasses register a short name: ``class MyLoss(Objective, name="mine", description="...")``.
    ``requires`` names the batch keys it reads beyond the defaults (e.g. ``teacher_embedding``, ``weight``),
    so the data module only ships those when asked; ``student_embedding`` (the input of the student's final
    layer) is added to the batch by :class:`~lelp_lightning.module.DistillModule` itself. Training rows whose
    label is hidden (semi-supervised transfer set) carry the label ``UNLABELED`` (−1): an objective that
    reads ``label`` must skip them.
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

    def setup(self, student: nn.Module, teacher: TeacherStatistics | None) -> None:
        """Build what depends on sizes or teacher statistics known only once the cache exists (``teacher``:
        ``None`` without a data module); runs before the optimiser."""

    def stage(self, epoch: int) -> str:
        """``'on'`` (add this term), ``'off'`` (skip it) or ``'alone'`` (train on the ``'alone'`` terms only)."""
        return "on"


def check_positive(owner: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise LelpError(f"{owner}.{key} must be > 0, got {value}.")


def check_fraction(owner: str, **values: float) -> None:
    for key, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise LelpError(f"{owner}.{key} must be in [0, 1], got {value}.")
