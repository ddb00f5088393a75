"""A small CNN student for square single-channel images (``input_dim`` = side², linked from the featuriser)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lelp_lightning.errors import LelpError
from lelp_lightning.students.networks import Student


class CNNStudent(Student, name="cnn",
                 description="A small CNN over square images (conv blocks), then a C·S linear head."):
    """conv3×3 → ReLU → max-pool 2 per entry of ``channels``, flattened (optionally a hidden layer), then C·S.

    Reads [B,1,H,W] images or the same images flattened to [B,H·W]; ``embed`` is everything before the head.
    """

    def __init__(self, input_dim: int = 784, num_outputs: int = 2, channels: tuple[int, ...] = (8, 16),
                 hidden_dim: int = 0, dropout: float = 0.0):
        super().__init__(input_dim, num_outputs)
        side = math.isqrt(input_dim)
        if side * side != input_dim:
            raise LelpError(f"CNNStudent reads square images, but input_dim={input_dim} is not a square number of "
                            "pixels; use the mlp student for other shapes.")
        layers: list[nn.Module] = []
        prev, size = 1, side
        for c in channels:
            layers += [nn.Conv2d(prev, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            prev, size = c, size // 2
        if not channels or size < 1:
            raise LelpError(f"CNNStudent needs 1 to {int(math.log2(side))} conv blocks for {side}×{side} images, "
                            f"got channels={channels}.")
        layers.append(nn.Flatten())
        layers += [nn.Dropout(dropout)] if dropout else []
        self.embedding_dim = prev * size * size
        if hidden_dim:
            layers += [nn.Linear(self.embedding_dim, hidden_dim), nn.ReLU()]
            self.embedding_dim = hidden_dim
        self.side = side
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.embedding_dim, num_outputs)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs.reshape(-1, 1, self.side, self.side))
