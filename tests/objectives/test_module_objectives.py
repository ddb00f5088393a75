"""How DistillModule runs objectives: the student's embed/head split, staged terms, parameters built in setup."""

import numpy as np
import pytest
import torch

from lelp_lightning.core import TeacherStatistics
from lelp_lightning.errors import LelpError
from lelp_lightning.module import DistillModule
from lelp_lightning.objectives import EmbeddingMatching, KnowledgeDistillation, RelationalKD
from lelp_lightning.students import HashedBagStudent, MLPStudent


@pytest.mark.parametrize(("student", "inputs", "dim"), [
    (MLPStudent(input_dim=6, num_outputs=4, hidden_dims=[5, 3]), torch.randn(2, 6), 3),
    (MLPStudent(input_dim=6, num_outputs=2, hidden_dims=[]), torch.randn(2, 6), 6),
    (HashedBagStudent(input_dim=50, num_outputs=2, embed_dim=8, hidden_dim=7),
     {"ids": torch.tensor([1, 2, 3]), "offsets": torch.tensor([0, 2]), "weights": torch.ones(3)}, 7),
])
def test_student_forward_is_head_of_embed(student, inputs, dim):
    h = student.embed(inputs)
    assert h.shape == (2, dim) == (2, student.embedding_dim)
    assert torch.equal(student(inputs), student.head(h))
    assert student.head.in_features == dim


class FakeData:
    """The one thing the model reads from a data module in its setup: the teacher's statistics."""

    def __init__(self, D):
        self.D = D

    def teacher_statistics(self):
        return TeacherStatistics(np.zeros((3, self.D), np.float32))


def module_with(*objectives, D=4):
    module = DistillModule(MLPStudent(input_dim=6, num_outputs=2, hidden_dims=[3]), list(objectives))
    data = FakeData(D)
    logs = type("L", (), {"should_update_logs": True})()
    module._trainer = type("T", (), {"datamodule": data, "current_epoch": 0, "fast_dev_run": False,
                                     "_logger_connector": logs})()  # what Lightning attaches
    module.setup("fit")
    return module, data


def batch(B=8, D=4):
    return {"inputs": torch.randn(B, 6), "label": torch.randint(0, 2, (B,)), "teacher_logits": torch.randn(B, 2),
            "teacher_embedding": torch.randn(B, D), "subclass_logits": torch.zeros(B, 2, 1)}


def test_setup_ships_the_keys_and_builds_the_projection_before_the_optimiser():
    module, data = module_with(KnowledgeDistillation(), EmbeddingMatching(), RelationalKD(), D=5)
    assert {"teacher_embedding", "teacher_logits", "label"} <= module.batch_keys
    optimiser = module.configure_optimizers()
    in_optimiser = {id(p) for group in optimiser.param_groups for p in group["params"]}
    projection = module.objectives[1].projection
    assert projection.weight.shape == (5, 3) and id(projection.weight) in in_optimiser


def test_training_step_sums_weighted_terms_with_the_student_embedding(monkeypatch):
    kd, hint, rkd = KnowledgeDistillation(2.0), EmbeddingMatching(weight=0.5), RelationalKD(weight=0.1)
    module, _ = module_with(kd, hint, rkd)
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    b = batch()
    total = module.training_step(b, 0)
    h = module.student.embed(b["inputs"])
    logits = module.student.head(h)
    full = {**b, "student_embedding": h}
    expected = kd(logits, full) + 0.5 * hint(logits, full) + 0.1 * rkd(logits, full)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_two_stage_hint_trains_alone_then_stops():
    kd, hint = KnowledgeDistillation(), EmbeddingMatching(hint_epochs=2)
    module, _ = module_with(kd, hint)
    assert module.active_objectives(0) == [hint] and module.active_objectives(1) == [hint]
    assert module.active_objectives(2) == [kd]
    lonely, _ = module_with(EmbeddingMatching(hint_epochs=1))
    with pytest.raises(LelpError, match="no objective trains in epoch 1"):
        lonely.active_objectives(1)


def test_hint_stage_leaves_the_head_untouched(monkeypatch):
    module, _ = module_with(KnowledgeDistillation(), EmbeddingMatching(hint_epochs=1))
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    module.training_step(batch(), 0).backward()
    assert module.student.head.weight.grad is None
    assert module.student.body[0].weight.grad.abs().sum() > 0
    assert np.isfinite(module.objectives[1].projection.weight.grad.numpy()).all()


def test_training_terms_are_logged_only_on_the_steps_lightning_writes(tweets_cache_dir, tmp_path, monkeypatch):
    """210 training tweets in batches of 32: 7 steps an epoch, 14 in all; every 3rd step is written."""
    import csv

    from helpers import run_main, tiny_run_args

    from lelp_lightning.module import DistillModule

    calls = []
    log = DistillModule.log
    monkeypatch.setattr(DistillModule, "log", lambda self, name, *a, **k: (calls.append(
        (name, self.global_step)) if name.startswith("train/") else None, log(self, name, *a, **k))[1])
    proc = run_main("fit", *tiny_run_args(tweets_cache_dir, tmp_path, "--trainer.log_every_n_steps", "3",
                                          wandb=False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = sorted({step for name, step in calls if name == "train/loss"})
    assert steps == [2, 5, 8, 11]  # (step + 1) % 3 == 0, as Lightning writes them
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        written = sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")})
    assert written == steps
