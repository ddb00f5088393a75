"""An example plugin strategy: split each class by the norm of the teacher's embedding.

Install it (``pip install examples/lelp_plugin_example``) and ``lelp strategies`` lists ``norm_bins``;
``--data.strategy norm_bins`` uses it. Subclassing :class:`SubclassStrategy` with ``name=`` registers it;
the entry point in pyproject.toml only makes lelp import this module.
"""

from __future__ import annotations

import torch

from lelp_lightning.strategies import SubclassStrategy
from lelp_lightning.strategies.base import iter_chunks


class NormBinsStrategy(SubclassStrategy, name="norm_bins",
                       description="Example plugin: S bins of the embedding norm per class (mean ± 1 std)."):
    """z[c,s] = −((‖h‖ − centre_{c,s}) / σ_c)², centres evenly spaced over μ_c ± σ_c of class c's norms."""

    shardable = True  # the fit is a function of sums, passed through self.comm

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        C = self.num_classes
        count, total, total_sq = (torch.zeros(C, dtype=torch.float64) for _ in range(3))
        for x, y in iter_chunks(embeddings, labels, self.chunk_size):
            norm = x.norm(dim=1)
            count.index_add_(0, y, torch.ones_like(norm))
            total.index_add_(0, y, norm)
            total_sq.index_add_(0, y, norm ** 2)
        self.comm.sum_(count, total, total_sq)
        mean = total / count
        self._std = (total_sq / count - mean ** 2).clamp_min(1e-24).sqrt()
        offsets = torch.linspace(-1.0, 1.0, self.num_subclasses, dtype=torch.float64) if self.num_subclasses > 1 \
            else torch.zeros(1, dtype=torch.float64)
        self._centres = mean[:, None] + self._std[:, None] * offsets[None, :]

    def _raw_logits(self, x, rows) -> torch.Tensor:
        norm = x.norm(dim=1)[:, None, None]
        return -((norm - self._centres[None]) / self._std[None, :, None]) ** 2

    def _state(self) -> dict[str, torch.Tensor]:
        return {"centres": self._centres, "std": self._std}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._centres, self._std = state["centres"], state["std"]
