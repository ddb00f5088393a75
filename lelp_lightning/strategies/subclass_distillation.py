"""Subclass Distillation (Müller, Kornblith, Hinton 2020): retrain the teacher's head with C·S outputs.

With the teacher's encoder frozen and cached, the head is a new linear layer h ↦ g ∈ R^{C·S} trained on the
cached training embeddings (random init, seeded): class logits are logsumexp over each class's S logits and
the loss is CE(y, class softmax) + λ·aux (:func:`subclass_distillation_aux_loss`, docs/methods.md), Adam, batches
of ``batch_size`` drawn chunk by chunk from the memory-mapped cache in a seeded order. Its z is the retrained
head's subclass logits, z[c,s] = g[c·S + s] (``z_scale='absolute'``: softmax(z[c]) is the head's own
subclass distribution). The retrained head classifies too, and its accuracy differs from the original
teacher's: :meth:`report` gives it for a split, next to the teacher's.

The reference colab's student side (α = 0.5, T = 4, T² scaling) is an objective setting, not a strategy one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.strategies.base import DEFAULT_CHUNK, RowInfo, SubclassStrategy, iter_chunks


def subclass_distillation_aux_loss(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The batch "negative sampling" term: standardise each row's C·S logits (population variance), scale by
    1/sqrt(T·C·S), sim = u uᵀ [B,B], aux = mean_i logsumexp_j sim[i,j] − 1/T − log B."""
    B, K = logits.shape
    u = (logits - logits.mean(1, keepdim=True)) / logits.std(1, correction=0, keepdim=True).clamp_min(1e-12)
    u = u / math.sqrt(temperature * K)
    sim = u @ u.T
    return torch.logsumexp(sim, 1).mean() - 1.0 / temperature - math.log(B)


class SubclassDistillationStrategy(SubclassStrategy, name="subclass_distillation",
                                   description="Subclass Distillation: a C·S head retrained on the cached embeddings "
                                               "with the auxiliary loss."):
    """A C·S linear head on the teacher's embeddings, trained with CE on classes + λ·aux; z = its logits."""

    def __init__(self, num_subclasses: int = 4, aux_weight: float = 1.0, aux_temperature: float = 1.0,
                 lr: float = 1e-3, batch_size: int = 256, epochs: int = 10, min_steps: int = 1000,
                 z_scale: str = "absolute", seed: int = 0, chunk_size: int = DEFAULT_CHUNK):
        super().__init__(num_subclasses, z_scale, seed, chunk_size)
        if aux_weight < 0 or not aux_temperature > 0 or not lr > 0:
            raise LelpError(f"Subclass Distillation needs aux_weight >= 0, aux_temperature > 0 and lr > 0, got "
                            f"{aux_weight}, {aux_temperature}, {lr}.")
        if batch_size < 2 or epochs < 1 or min_steps < 0:
            raise LelpError(f"Subclass Distillation needs batch_size >= 2 (the aux term compares rows of a batch), "
                            f"epochs >= 1 and min_steps >= 0, got {batch_size}, {epochs}, {min_steps}.")
        self.aux_weight = aux_weight
        self.aux_temperature = aux_temperature
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.min_steps = min_steps
        self._weight: torch.Tensor | None = None  # [C·S, D]
        self._bias: torch.Tensor | None = None  # [C·S]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE(y, softmax(logsumexp_s g)) + λ·aux for head outputs g [B, C·S]."""
        class_logits = torch.logsumexp(logits.view(logits.shape[0], self.num_classes, self.num_subclasses), -1)
        ce = torch.nn.functional.cross_entropy(class_logits, labels)
        return ce + self.aux_weight * subclass_distillation_aux_loss(logits, self.aux_temperature)

    def _batches(self, embeddings, labels, gen: torch.Generator):
        """Training batches: chunks in a seeded random order, rows shuffled within each chunk."""
        n = embeddings.shape[0]
        starts = torch.randperm(math.ceil(n / self.chunk_size), generator=gen).tolist()
        for k in starts:
            lo, hi = k * self.chunk_size, min(n, (k + 1) * self.chunk_size)
            x = torch.from_numpy(np.array(embeddings[lo:hi], dtype=np.float32))
            y = torch.from_numpy(np.array(labels[lo:hi], dtype=np.int64))
            order = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), self.batch_size):
                idx = order[i:i + self.batch_size]
                if len(idx) >= 2:
                    yield x[idx], y[idx]

    def _fit(self, embeddings, labels, W, b, rows) -> None:
        n = len(labels)
        steps_per_epoch = sum(math.ceil(min(self.chunk_size, n - lo) / self.batch_size)
                              for lo in range(0, n, self.chunk_size))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # steps on a few hundred rows: more threads only add synchronisation
        try:
            # the DataModule may fit inside Lightning's evaluation loop, where autograd is off
            with torch.inference_mode(False), torch.enable_grad():
                weight, bias = self._train(embeddings, labels, max(self.epochs * steps_per_epoch, self.min_steps))
        finally:
            torch.set_num_threads(threads)
        self._weight, self._bias = weight.double(), bias.double()

    def _train(self, embeddings, labels, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        C, S, D = self.num_classes, self.num_subclasses, embeddings.shape[1]
        gen = torch.Generator().manual_seed(int(self.seed))
        bound = 1.0 / math.sqrt(D)  # torch.nn.Linear's default init, drawn from the run's seed
        weight = ((torch.rand(C * S, D, generator=gen) * 2 - 1) * bound).requires_grad_()
        bias = ((torch.rand(C * S, generator=gen) * 2 - 1) * bound).requires_grad_()
        optimizer = torch.optim.Adam([weight, bias], lr=self.lr)
        done = 0
        while done < steps:
            for x, y in self._batches(embeddings, labels, gen):
                optimizer.zero_grad(set_to_none=True)
                self.loss(torch.nn.functional.linear(x, weight, bias), y).backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break
        return weight.detach(), bias.detach()

    def _raw_logits(self, x: torch.Tensor, rows: RowInfo) -> torch.Tensor:
        return (x @ self._weight.T + self._bias).view(-1, self.num_classes, self.num_subclasses)

    def class_logits(self, embeddings) -> torch.Tensor:
        """The retrained head's class logits [B,C] (logsumexp over each class's S logits)."""
        self._check_fitted()
        if isinstance(embeddings, torch.Tensor):
            x = embeddings.double()
        else:
            x = torch.from_numpy(np.array(embeddings, dtype=np.float64))
        return torch.logsumexp(self._raw_logits(x, RowInfo()), -1)

    def report(self, embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The retrained head's accuracy on these rows (the original teacher's is reported beside it)."""
        correct = 0
        for x, y in iter_chunks(embeddings, labels, self.chunk_size):
            correct += int((self.class_logits(x).argmax(1) == y).sum())
        return {"retrained_teacher_accuracy": correct / max(1, len(labels))}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"weight": self._weight, "bias": self._bias}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self._weight, self._bias = state["weight"], state["bias"]
