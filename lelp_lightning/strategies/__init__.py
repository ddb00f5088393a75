"""Pseudo-subclass strategies: each turns teacher embeddings into subclass logits z [N,C,S]."""

from lelp_lightning.strategies.base import SubclassStrategy, strategies
from lelp_lightning.strategies.linear_projection import (
    LinearProjectionStrategy,
    PCAStrategy,
    RandomProjectionStrategy,
)
from lelp_lightning.strategies.no_subclass import NoSubclassStrategy

__all__ = [
    "SubclassStrategy", "strategies", "LinearProjectionStrategy", "PCAStrategy", "RandomProjectionStrategy",
    "NoSubclassStrategy",
]
