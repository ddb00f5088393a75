"""SLaM: Student-Label Mixing (Kontonis, Iliopoulos, Trinh, Baykal, Menghani, Vee 2023, arXiv 2302.03806)."""

from __future__ import annotations

import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import UNLABELED, Objective, check_positive, class_logits, masked_mean

_EPS = 1e-12


def slam_mix(student_probs: torch.Tensor, alpha: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """mix(f) = α(x)·f + (1 − α(x))·(1 − f) ⊙ top_k(teacher, x), the un-normalised form of the paper's experiments."""
    a = alpha.unsqueeze(-1).to(student_probs.dtype)
    return a * student_probs + (1.0 - a) * (1.0 - student_probs) * top


class StudentLabelMixing(Objective, name="slam",
                         description="SLaM: CE(teacher soft label, mix(student)); "
                                     "α(x) isotonic on validation, k(x) = top_k."):
    """CE(softmax(f/τ), mix(softmax(g))) averaged over rows; the student still predicts with the un-mixed g.

    The teacher's label is noisy; instead of fitting it directly, the student's prediction is first pushed
    through the same noise: with probability α(x) the teacher is right, otherwise its label is one of its
    other top-k classes. α(x) is the batch's ``teacher_accuracy`` (isotonic regression of the teacher's
    correctness on its margin over the labeled validation split); k(x) = ``top_k`` for every x (2 for
    binary problems, where it flips the label). ``unlabeled_only`` restricts the term to the transfer set
    (rows whose label is hidden), the paper's semi-supervised setting; labeled rows then train with ``ce``.
    """

    requires = ("teacher_logits", "teacher_accuracy", "label")

    def __init__(self, tau: float = 1.0, top_k: int = 2, unlabeled_only: bool = False, weight: float = 1.0):
        super().__init__(weight)
        check_positive("StudentLabelMixing", tau=tau)
        if top_k < 2:
            raise LelpError(f"StudentLabelMixing.top_k must be >= 2 (the teacher's label and at least one "
                            f"alternative), got {top_k}.")
        self.tau, self.top_k, self.unlabeled_only = tau, top_k, unlabeled_only

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        f = batch["teacher_logits"]
        C = f.shape[1]
        probs = torch.softmax(class_logits(student_logits, C), dim=-1)
        k = min(self.top_k, C)
        top = torch.zeros_like(probs).scatter_(1, f.topk(k, dim=-1).indices, 1.0)
        mixed = slam_mix(probs, batch["teacher_accuracy"], top)
        target = torch.softmax(f / self.tau, dim=-1)
        per_row = -(target * mixed.clamp(min=_EPS).log()).sum(-1)
        rows = batch["label"] == UNLABELED if self.unlabeled_only else torch.ones_like(per_row, dtype=torch.bool)
        return masked_mean(per_row, rows)
