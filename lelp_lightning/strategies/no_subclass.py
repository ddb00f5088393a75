"""Vanilla KD through the subclass code path: one subclass per class, z = 0."""

from __future__ import annotations

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy


class NoSubclassStrategy(SubclassStrategy, name="none", description="S = 1 and z = 0: vanilla knowledge distillation."):
    """S = 1 with z = 0, so the subclass target reduces to softmax(teacher_logits / τ)."""

    shardable = True

    def __init__(self, num_subclasses: int = 1, z_scale: str = "absolute", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        if num_subclasses != 1:
            raise LelpError(f"the 'none' strategy (vanilla KD) has exactly 1 subclass per class, got {num_subclasses}.")
        super().__init__(1, "absolute", seed, chunk_size)

    def _fit(self, embeddings: np.ndarray, labels: np.ndarray, W: torch.Tensor, b: torch.Tensor,
             rows: RowInfo) -> None:
        pass

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.num_classes, 1, dtype=torch.float64)

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        pass
