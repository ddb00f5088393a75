"""Relational knowledge distillation (Park, Kim, Lu, Cho 2019, arXiv 1904.05068)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import Objective


def normalised_distances(e: torch.Tensor) -> torch.Tensor:
    """ψ_D: pairwise Euclidean distances [B,B] divided by their mean over pairs i ≠ j (diagonal 0)."""
    B = e.shape[0]
    off = ~torch.eye(B, dtype=torch.bool, device=e.device)
    d = (e.unsqueeze(1) - e.unsqueeze(0)).pow(2).sum(-1).clamp(min=1e-12).sqrt() * off
    return d / d[off].mean().clamp(min=1e-12)


def angles(e: torch.Tensor) -> torch.Tensor:
    """ψ_A: cos of the angle at vertex a between b and c, [B,B,B] indexed (a,b,c)."""
    unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=-1)  # unit[a,b] = (e_b − e_a)/‖·‖
    return unit @ unit.transpose(1, 2)


def _distinct_triplets(B: int, device) -> torch.Tensor:
    i = torch.arange(B, device=device)
    a, b, c = i.view(B, 1, 1), i.view(1, B, 1), i.view(1, 1, B)
    return (a != b) & (a != c) & (b != c)


class RelationalKD(Objective, name="rkd",
                   description="RKD: Huber loss between the student's and teacher's pairwise distances "
                               "and triplet angles."):
    """distance_weight·L_D + angle_weight·L_A between the student embedding h_s and the teacher embedding h.

    L_D = mean over pairs i ≠ j of Huber(ψ_D(h_s)_ij, ψ_D(h)_ij), distances normalised by their batch mean;
    L_A = mean over distinct triplets of Huber(ψ_A(h_s), ψ_A(h)), Huber with δ = 1 (smooth L1).
    Relations are compared, not coordinates, so no projection is needed when the dimensions differ.
    Memory is O(B²·D + B³): keep batches in the hundreds. Defaults are the paper's (λ_D = 1, λ_A = 2).
    """

    requires = ("teacher_embedding", "student_embedding")

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0, weight: float = 1.0):
        super().__init__(weight)
        if distance_weight < 0 or angle_weight < 0 or distance_weight + angle_weight == 0:
            raise LelpError(f"RelationalKD.distance_weight and angle_weight must be >= 0 and not both 0, "
                            f"got {distance_weight} and {angle_weight}.")
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        s = batch["student_embedding"]
        t = batch["teacher_embedding"].to(s.dtype)
        B = s.shape[0]
        loss = s.new_zeros(())
        if self.distance_weight and B >= 2:
            off = ~torch.eye(B, dtype=torch.bool, device=s.device)
            with torch.no_grad():
                target = normalised_distances(t)
            loss = loss + self.distance_weight * F.smooth_l1_loss(normalised_distances(s)[off], target[off])
        if self.angle_weight and B >= 3:
            keep = _distinct_triplets(B, s.device)
            with torch.no_grad():
                target = angles(t)
            loss = loss + self.angle_weight * F.smooth_l1_loss(angles(s)[keep], target[keep])
        return loss
