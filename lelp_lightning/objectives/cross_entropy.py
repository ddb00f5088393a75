"""The subclass soft cross-entropy (LELP and every strategy; vanilla KD when S = 1) and plain CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import (
    Objective,
    check_fraction,
    check_positive,
    class_logits,
    labeled_cross_entropy,
    subclass_targets,
)


class SubclassCrossEntropy(Objective, name="subclass_ce",
                           description="Soft cross-entropy to the teacher's pseudo-subclass distribution "
                                       "(LELP; KD when S=1)."):
    """(1−α)·CE(p, softmax(g)) + α·CE(y, softmax(logsumexp_s g)), p from :func:`subclass_targets`.

    ``student_temperature`` (open choice, default off): divide the student's logits by τ in the soft term
    and multiply that term by τ² (Hinton's scaling); with α = 0 it only rescales the learning rate.
    """

    requires = ("teacher_logits", "subclass_logits", "label")

    def __init__(self, tau: float = 1.0, beta: float = 1.0, alpha: float = 0.0, student_temperature: bool = False,
                 weight: float = 1.0):
        super().__init__(weight)
        check_positive("SubclassCrossEntropy", tau=tau, beta=beta)
        check_fraction("SubclassCrossEntropy", alpha=alpha)
        self.tau, self.beta, self.alpha, self.student_temperature = tau, beta, alpha, student_temperature

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        z = batch["subclass_logits"]
        B, C, S = z.shape
        if student_logits.shape[1] != C * S:
            raise LelpError(f"the student head has {student_logits.shape[1]} outputs but the targets need "
                            f"C·S = {C}·{S} = {C * S}; link the student's num_outputs to the data module.")
        p = subclass_targets(batch["teacher_logits"], z, self.tau, self.beta).reshape(B, C * S)
        t = self.tau if self.student_temperature else 1.0
        soft = -(p * F.log_softmax(student_logits / t, dim=-1)).sum(-1).mean() * t * t
        if self.alpha == 0.0:
            return soft
        hard = labeled_cross_entropy(class_logits(student_logits, C), batch["label"])
        return (1.0 - self.alpha) * soft + self.alpha * hard


class GroundTruthCrossEntropy(Objective, name="ce",
                              description="Cross-entropy to the true labels only: the student without a teacher."):
    """CE(y, softmax(logsumexp_s g)): trains the student on the labels alone (rows with hidden labels skipped)."""

    requires = ("label",)

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        C = batch["subclass_logits"].shape[1]
        return labeled_cross_entropy(class_logits(student_logits, C), batch["label"])
