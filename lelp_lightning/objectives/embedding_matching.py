"""Embedding matching / FitNets hints (Romero et al. 2015, arXiv 1412.6550) on the teacher's cached embedding."""

from __future__ import annotations

import torch
from torch import nn

from lelp_lightning.core import TeacherStatistics
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import Objective


class EmbeddingMatching(Objective, name="embedding_matching",
                        description="FitNets hint: ½‖h − r(h_s)‖² with a learned linear map r; "
                                    "one-stage or two-stage."):
    """½‖h − r(h_s)‖² per row, averaged over the batch; r: R^{D_s} → R^D is a learned linear map (with bias).

    h is the teacher's embedding (the input of its final layer), h_s the student's (the input of its
    head); r is a parameter of this objective, trained with the student, built once the sizes are known.
    ``standardize`` matches (h − mean)/std instead, with mean and std per dimension over the training split.

    One-stage (``hint_epochs = 0``, the default): the term is added to the others (e.g. ``kd``) with its
    ``weight`` λ in every epoch. Two-stage (``hint_epochs = N > 0``), as FitNets: for the first N epochs
    this term is the only loss (hint pre-training of the student's body and r), afterwards it is off and
    the other terms train the whole student.
    """

    requires = ("teacher_embedding", "student_embedding")

    def __init__(self, standardize: bool = False, hint_epochs: int = 0, weight: float = 1.0):
        super().__init__(weight)
        if hint_epochs < 0:
            raise LelpError(f"EmbeddingMatching.hint_epochs must be >= 0, got {hint_epochs}.")
        self.standardize, self.hint_epochs = standardize, hint_epochs
        self.projection: nn.Linear | None = None

    def _build(self, student_dim: int, teacher_dim: int) -> None:
        self.projection = nn.Linear(student_dim, teacher_dim)
        if self.standardize:
            self.register_buffer("teacher_mean", torch.zeros(teacher_dim))
            self.register_buffer("teacher_std", torch.ones(teacher_dim))

    def setup(self, student: nn.Module, teacher: TeacherStatistics | None) -> None:
        if self.projection is not None:
            return
        if teacher is None:
            raise LelpError("embedding_matching needs the teacher's embedding statistics (its size, and mean / std "
                            "with standardize), which the DistillDataModule provides from the cache.")
        self._build(student.embedding_dim, teacher.embedding_dim)
        if self.standardize:
            mean, std = teacher.embedding_mean_std
            self.teacher_mean.copy_(torch.from_numpy(mean))
            self.teacher_std.copy_(torch.from_numpy(std).clamp(min=1e-6))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "projection.weight")
        if self.projection is None and weight is not None:  # a checkpoint loaded before setup ran
            self._build(weight.shape[1], weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def stage(self, epoch: int) -> str:
        if self.hint_epochs == 0:
            return "on"
        return "alone" if epoch < self.hint_epochs else "off"

    def forward(self, student_logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.projection is None:
            raise LelpError("embedding_matching was used before its setup built the projection r.")
        h_s = batch["student_embedding"]
        h = batch["teacher_embedding"].to(h_s.dtype)
        if self.standardize:
            h = (h - self.teacher_mean) / self.teacher_std
        return 0.5 * (h - self.projection(h_s)).pow(2).sum(-1).mean()
