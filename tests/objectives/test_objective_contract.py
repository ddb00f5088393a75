"""The objective contract: every registered objective, built with its defaults, runs one training step of a tiny
model on a batch of labeled and hidden-label rows: a finite loss whose gradients reach the student's parameters,
and an optimiser step that moves them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lelp_lightning.core import UNLABELED, TeacherStatistics
from lelp_lightning.module import DistillModule
from lelp_lightning.objectives import objectives
from lelp_lightning.students import MLPStudent

C, S, D, B = 3, 2, 5, 12


class FakeData:
    """What the model reads from a data module in its setup: the teacher's statistics."""

    def teacher_statistics(self):
        return TeacherStatistics(np.random.default_rng(0).normal(size=(40, D)).astype(np.float32))


def batch() -> dict[str, torch.Tensor]:
    """Every key an objective may require: half the rows labeled, half hidden (the semi-supervised setting)."""
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, C, (B,), generator=g)
    label[::2] = UNLABELED
    return {"inputs": torch.randn(B, 6, generator=g), "label": label,
            "teacher_logits": torch.randn(B, C, generator=g), "teacher_embedding": torch.randn(B, D, generator=g),
            "subclass_logits": torch.randn(B, C, S, generator=g), "teacher_accuracy": torch.rand(B, generator=g),
            "weight": torch.rand(B, generator=g)}


@pytest.mark.parametrize("name", objectives.names())
def test_every_objective_trains_a_tiny_student_one_step(name):
    torch.manual_seed(0)
    objective = objectives.get(name)()
    module = DistillModule(MLPStudent(input_dim=6, num_outputs=C * S, hidden_dims=[4]), [objective], num_classes=C,
                           num_subclasses=S)
    logs = type("L", (), {"should_update_logs": False})()
    module._trainer = type("T", (), {"datamodule": FakeData(), "current_epoch": 0, "fast_dev_run": False,
                                     "_logger_connector": logs})()  # what Lightning attaches
    module.log = lambda *a, **k: None
    module.setup("fit")
    data = batch()
    assert set(objective.requires) - {"student_embedding"} <= set(data), "the contract's batch lacks a key"
    optimisers = module.configure_optimizers()
    optimisers = optimisers if isinstance(optimisers, list | tuple) else [optimisers]
    before = {n: p.detach().clone() for n, p in module.student.named_parameters()}
    loss = module.training_step(data, 0)
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    grads = {n: p.grad for n, p in module.student.named_parameters() if p.grad is not None}
    assert grads, f"{name}: no gradient reaches the student"
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values()), f"{name}: the student's gradients are all zero"
    for optimiser in optimisers:
        optimiser.step()
    assert any(not torch.equal(p, before[n]) for n, p in module.student.named_parameters()), f"{name}: nothing moved"
