"""Oracle (docs/methods.md): the data source's known fine labels as subclasses, the upper bound.

Fitting lists, for each class c, the distinct fine labels of its training rows (sorted) and gives them the
subclass slots 0, 1, …; a class with more fine labels than S is refused (set ``num_subclasses`` to the
largest count, e.g. 10 for binarised 20 Newsgroups), a class with fewer leaves slots unused. For a row with
fine label f: z[c, slot(f)] = margin in the class c that f belongs to and 0 everywhere else (other classes'
subclasses are uniform: the row's fine label says nothing about them); a fine label never seen in training
(or negative: unknown) gives z = 0 everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy


class OracleStrategy(SubclassStrategy, name="oracle",
                     description="Known fine labels from the data source as subclasses: the upper bound."):
    """Subclass = the row's true fine label (e.g. the 20 Newsgroups topic inside an even/odd class)."""

    requires = ("fine_labels",)
    shardable = True

    def __init__(self, num_subclasses: int = 10, margin: float = 10.0, z_scale: str = "absolute", seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, z_scale, seed, chunk_size)
        if not margin > 0:
            raise LelpError(f"margin (the logit of the true subclass) must be > 0, got {margin}.")
        self.margin = margin
        self._slots: torch.Tensor | None = None  # [C,S] fine label of each slot, -1 where unused

    @property
    def slots(self) -> torch.Tensor:
        """The fine label in each (class, subclass) slot [C,S]; -1 marks an unused slot."""
        self._check_fitted()
        return self._slots

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        fine = np.asarray(rows.fine_labels, dtype=np.int64)
        pairs = np.unique(np.stack([np.asarray(labels, dtype=np.int64), fine], 1)[fine >= 0], axis=0)
        pairs = np.unique(np.concatenate(self.comm.gather(pairs)), axis=0)
        slots = torch.full((self.num_classes, self.num_subclasses), -1, dtype=torch.int64)
        for c in range(self.num_classes):
            members = pairs[pairs[:, 0] == c, 1]
            if len(members) > self.num_subclasses:
                raise LelpError(f"class {c} has {len(members)} distinct fine labels in the training rows but "
                                f"num_subclasses={self.num_subclasses}; set num_subclasses to at least {len(members)}.")
            slots[c, :len(members)] = torch.from_numpy(members)
        self._slots = slots

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        fine = torch.as_tensor(np.asarray(rows.fine_labels, dtype=np.int64))
        match = (self._slots[None] == fine[:, None, None]) & (self._slots[None] >= 0)
        return match.to(torch.float64) * self.margin

    def _state(self) -> dict[str, torch.Tensor]:
        return {"slots": self._slots}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._slots = state["slots"]
