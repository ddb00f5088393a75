"""Vanilla knowledge distillation (Hinton, Vinyals, Dean 2015, arXiv 1503.02531)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lelp_lightning.objectives.base import (
    Objective,
    check_fraction,
    check_positive,
    class_logits,
    labeled_cross_entropy,
)


def kd_per_row(student_class_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(f/T) ‖ softmax(g/T)) per row, KL summed over classes."""
    T = temperature
    log_q = F.log_softmax(student_class_logits / T, dim=-1)
    log_p = F.log_softmax(teacher_logits / T, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1) * (T * T)


class KnowledgeDistillation(Objective, name="kd",
                            description="Hinton's KD: T²·KL(softmax(f/T) ‖ softmax(g/T)), "
                                        "α mixing with the true labels."):
    """(1−α)·T²·KL(softmax(f/T) ‖ softmax(g/T)) + α·CE(y, softmax(g)), averaged over the batch.

    g are the student's class logits (logsumexp over each class's S logits, so any head width works).
    α is the weight of the ground-truth term, as in ``subclass_ce`` (docs/methods.md: Hinton's form often has
    α on the soft term: this α is one minus that one). The T² factor keeps the soft term's gradient
    size independent of T; its gradient w.r.t. g is (1−α)·T·(softmax(g/T) − softmax(f/T)) / B.
    """

    requires = ("teacher_logits", "label")

    def __init__(self, temperature: float = 1.0, alpha: float = 0.0, weight: float = 1.0):
        super().__init__(weight)
        check_positive(type(self).__name__, temperature=temperature)
        check_fraction(type(self).__name__, alpha=alpha)
        self.temperature, self.alpha = temperature, alpha

    def soft_term(self, student_class_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return kd_per_row(student_class_logits, batch["teacher_logits"], self.temperature).mean()

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        g = class_logits(student_logits, batch["teacher_logits"].shape[1])
        soft = self.soft_term(g, batch)
        if self.alpha == 0.0:
            return soft
        return (1.0 - self.alpha) * soft + self.alpha * labeled_cross_entropy(g, batch["label"])
