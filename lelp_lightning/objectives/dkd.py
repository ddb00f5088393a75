"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang 2022, arXiv 2203.08679)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import UNLABELED, Objective, check_positive, class_logits


def _binary_and_rest(logits: torch.Tensor, target_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log b = log [p_target, 1 − p_target] [B,2] and the log-softmax over the C−1 non-target logits [B,C−1]."""
    B, C = logits.shape
    log_all = torch.logsumexp(logits, dim=-1)
    target = logits.masked_select(target_mask)
    rest = logits.masked_select(~target_mask).view(B, C - 1)
    log_b = torch.stack([target - log_all, torch.logsumexp(rest, dim=-1) - log_all], dim=-1)
    return log_b, F.log_softmax(rest, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


class DecoupledKD(Objective, name="dkd",
                  description="DKD: T²·(a·TCKD + b·NCKD), target-class and non-target-class KD decoupled."):
    """T²·(tckd_weight·TCKD + nckd_weight·NCKD), averaged over the batch.

    TCKD = KL(b_teacher ‖ b_student) with b = [p_target, 1 − p_target] at temperature T; NCKD = KL between
    teacher and student softmax(·/T) over the C−1 non-target classes only. For C = 2 the non-target
    distribution has a single class, NCKD = 0 and TCKD is the full binary KL: DKD with tckd_weight = 1 is
    vanilla KD (tested). The target is the true label, or the teacher's argmax on rows whose label is
    hidden. The ground-truth CE term of the paper is the separate ``ce`` objective; the paper's warm-up
    of the DKD term over the first epochs is not applied.
    Defaults are the paper's CIFAR-100 values (T = 4, α = 1, β = 8).
    """

    requires = ("teacher_logits", "label")

    def __init__(self, temperature: float = 4.0, tckd_weight: float = 1.0, nckd_weight: float = 8.0,
                 weight: float = 1.0):
        super().__init__(weight)
        check_positive("DecoupledKD", temperature=temperature)
        if tckd_weight < 0 or nckd_weight < 0:
            raise LelpError(f"DecoupledKD.tckd_weight and nckd_weight must be >= 0, "
                            f"got {tckd_weight} and {nckd_weight}.")
        self.temperature, self.tckd_weight, self.nckd_weight = temperature, tckd_weight, nckd_weight

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        f = batch["teacher_logits"]
        C = f.shape[1]
        g = class_logits(student_logits, C)
        label = batch["label"]
        target = torch.where(label == UNLABELED, f.argmax(-1), label)
        mask = F.one_hot(target, C).bool()
        T = self.temperature
        b_s, rest_s = _binary_and_rest(g / T, mask)
        b_t, rest_t = _binary_and_rest(f / T, mask)
        tckd = _kl(b_t, b_s)
        nckd = _kl(rest_t, rest_s)
        return ((self.tckd_weight * tckd + self.nckd_weight * nckd) * (T * T)).mean()
