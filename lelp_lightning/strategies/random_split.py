"""Random split (docs/methods.md): the "just more output logits" control.

Every row gets a fixed random subclass s(row) = hash(row id, seed) mod S, the same for every class, so
z[c] = margin · one-hot(s(row)) for all c and the target is p[c,s] = softmax(f/τ)[c] · [s = s(row)]
(softened by β). The assignment depends only on the row id: it is defined on every split, is the same
across processes and reruns, and carries no information about the embedding.
"""

from __future__ import annotations

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy, one_hot_logits
from lelp_lightning.strategies.sampling import row_hash


class RandomSplitStrategy(SubclassStrategy, name="random_split",
                          description="Each row a fixed random subclass (hash of its row id): "
                                      "the 'more logits' control."):
    """A random, fixed subclass per row id; nothing is learned from the embeddings."""

    requires = ("row_ids",)
    shardable = True

    def __init__(self, num_subclasses: int = 4, margin: float = 10.0, z_scale: str = "absolute", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, z_scale, seed, chunk_size)
        if not margin > 0:
            raise LelpError(f"margin (the logit of the assigned subclass) must be > 0, got {margin}.")
        self.margin = margin

    def assignments(self, row_ids: np.ndarray) -> np.ndarray:
        """The subclass of each row id."""
        return (row_hash(row_ids, self.seed) % np.uint64(self.num_subclasses)).astype(np.int64)

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        pass

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        z = one_hot_logits(torch.from_numpy(self.assignments(rows.row_ids)), self.num_subclasses, self.margin)
        return z[:, None, :].expand(-1, self.num_classes, -1).contiguous()

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        pass
