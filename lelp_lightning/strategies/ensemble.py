"""An ensemble of random projections: M independent random-projection splits, the target their mixture.

Each member m draws S_m = S / M Gaussian directions in the null space of the teacher's
classifier (as ``random_projection``) and gives subclass logits z_m [C, S_m], scaled relative to their spread.
The ensemble's z [C, M·S_m] is the members' log-probabilities side by side,
``z[c, (m, s)] = log softmax(z_m[c] / member_beta)[s]``, so with the objective's β = 1 the target is
``p[c, (m, s)] = p_teacher(c) · q_m(s | c) / M``: every member's split of every class at weight 1/M, which the
student's C·M·S_m outputs reproduce side by side. (A reviewer of the paper found single random projections
already strong; this asks whether several at once add what one misses.)
"""

from __future__ import annotations

import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo
from lelp_lightning.strategies.linear_projection import LinearProjectionStrategy


class RandomProjectionEnsembleStrategy(LinearProjectionStrategy, name="random_projection_ensemble",
                                       description="Mixture of M random-projection splits (S = M · per member)."):
    """``num_projections`` (M) random-projection members sharing the ``num_subclasses`` (S) outputs of a class,
    S / M subclasses each."""

    def __init__(self, num_subclasses: int = 8, num_projections: int = 4, null_space: bool = True,
                 center: bool = True, member_beta: float = 1.0, seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        if num_projections < 1 or num_subclasses % num_projections or num_subclasses // num_projections < 2 \
                or not member_beta > 0:
            raise LelpError(f"random_projection_ensemble needs num_subclasses (S) a multiple of num_projections (M) "
                            f"with S / M >= 2 and member_beta > 0, got S={num_subclasses}, M={num_projections}, "
                            f"member_beta={member_beta}.")
        super().__init__(num_subclasses, null_space, center, rotation="none", directions="random",
                         z_scale="relative", seed=seed, chunk_size=chunk_size)
        self.num_projections = num_projections
        self.member_beta = member_beta

    @property
    def subclasses_per_projection(self) -> int:
        return self.num_subclasses // self.num_projections

    def subclass_logits(self, embeddings, rows: RowInfo | None = None) -> torch.Tensor:
        """Each member's log-probabilities over its own subclasses, side by side: z [B, C, M·S_m]."""
        z = super().subclass_logits(embeddings, rows)
        B, C = z.shape[:2]
        members = z.view(B, C, self.num_projections, self.subclasses_per_projection) / self.member_beta
        return torch.log_softmax(members.double(), dim=-1).view(B, C, -1).float()
