"""Weighted distillation (Iliopoulos et al. 2022, "Weighted Distillation with Unlabeled Examples", arXiv 2210.06711)."""

from __future__ import annotations

import torch

from lelp_lightning.objectives.base import UNLABELED, masked_mean
from lelp_lightning.objectives.kd import KnowledgeDistillation, kd_per_row


class WeightedDistillation(KnowledgeDistillation, name="weighted_kd",
                           description="KD with per-example weights w(x) = estimated teacher accuracy at x, "
                                       "normalised to mean 1."):
    """KD whose per-row soft term is multiplied by w(x): mean_i w_i·T²·KL_i, then α-mixed like ``kd``.

    w(x) is the batch's ``weight``: the teacher's accuracy at x's margin, estimated by isotonic regression
    on the labeled validation split and normalised to mean 1 over the training split (the paper's exact
    formula is an open choice; this is the reading docs/methods.md gives). Rows the teacher probably gets
    wrong count less. ``unlabeled_only`` restricts the soft term to the transfer set (rows whose label is
    hidden), the paper's semi-supervised setting; the labeled rows then train through ``alpha`` or ``ce``.
    """

    requires = KnowledgeDistillation.requires + ("weight",)

    def __init__(self, temperature: float = 1.0, alpha: float = 0.0, unlabeled_only: bool = False,
                 weight: float = 1.0):
        super().__init__(temperature, alpha, weight)
        self.unlabeled_only = unlabeled_only

    def soft_term(self, student_class_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        per_row = batch["weight"].to(student_class_logits.dtype) * \
            kd_per_row(student_class_logits, batch["teacher_logits"], self.temperature)
        rows = batch["label"] == UNLABELED if self.unlabeled_only else torch.ones_like(per_row, dtype=torch.bool)
        return masked_mean(per_row, rows)
