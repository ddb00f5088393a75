"""Our objectives against torchdistill's implementations of the same losses, on seeded random inputs.

torchdistill (Matsubara 2021, the configuration-driven KD framework) is pinned in requirements-test-nodeps.txt
and installed with ``--no-deps`` by scripts/setup.sh; these tests need none of its optional dependencies
(torchvision, pyyaml, scipy): only ``torchdistill.losses`` is imported. Tested against torchdistill 1.1.5.

Where the two differ on purpose, the test asserts ``ours == factor × theirs`` with the exact factor:

* ``kd``: ``KDLoss`` with ``alpha > 0`` and targets: factor 1. With ``alpha = 0`` (or no targets) KDLoss returns
  the bare KL without T²; ours keeps T² (so the soft term's gradient does not shrink with T): factor T².
* ``rkd``: ``RKDLoss`` averages its smooth-L1 terms over all B² pairs / B³ triplets; the left-out entries
  (i = j; a = b, a = c or b = c) are 0 on both sides, so ours (mean over distinct pairs / triplets) is theirs
  times B²/(B(B−1)) = B/(B−1) for the distance term and B³/(B(B−1)(B−2)) = B²/((B−1)(B−2)) for the angle term.
* ``embedding_matching`` (FitNets hint): torchdistill has no FitNets class; its FitNets sample config
  (configs/sample/ilsvrc2012/fitnet) is ``MSELoss(reduction='sum')`` in a ``SimpleLossWrapper`` between the
  regressor's output and the teacher's hint layer. Ours is ½·(1/B)·Σ‖h − r(h_s)‖²: factor 1/(2B).

torchdistill 1.1.5 has no DKD, SLaM, weighted-KD or subclass-CE loss; those have no reference here.
"""

import pytest
import torch
from torch.testing import assert_close
from torchdistill.losses.mid_level import (  # missing? run scripts/setup.sh (requirements-test-nodeps.txt)
    KDLoss,
    RKDLoss,
)
from torchdistill.losses.registry import get_mid_level_loss

from lelp_lightning.objectives import EmbeddingMatching, KnowledgeDistillation, RelationalKD

HIDDEN = -1  # the label of a row whose label is hidden (UNLABELED, see Objective)
TIGHT = {"rtol": 1e-11, "atol": 1e-13}  # float64 throughout


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _io(path, value):
    """torchdistill's io_dict: {module_path: {'output': tensor}}."""
    return {path: {"output": value}}


# -- KD ---------------------------------------------------------------------------------------------------
def _kd_case(B, C, S, seed, hidden_rows=()):
    g = _generator(seed)
    f = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
    student = (torch.randn(B, C * S, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, C, (B,), generator=g)
    y[list(hidden_rows)] = HIDDEN
    return f, student, y


def _torchdistill_kd(T, alpha, **ce_kwargs):
    return KDLoss("fc", "output", "fc", "output", temperature=T, alpha=alpha, reduction="batchmean", **ce_kwargs)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize(("B", "C", "S"), [(8, 2, 1), (16, 5, 1), (8, 3, 3)])
def test_kd_soft_term_is_torchdistill_kdloss_times_t_squared(T, B, C, S):
    """``KnowledgeDistillation(temperature=T, alpha=0)`` == T² × ``KDLoss(temperature=T, alpha=0,
    reduction='batchmean')``: with alpha = 0 KDLoss returns KL_batchmean(softmax(f/T) ‖ softmax(g/T)) without
    the T² factor, ours is T²·mean_i KL_i. The gradient w.r.t. the student logits carries the same factor.
    For a C·S head (S > 1) theirs is fed our class logits g_c = logsumexp_s g[c,s] (what ours reads)."""
    f, student, y = _kd_case(B, C, S, seed=int(10 * T) + B + S)
    ours = KnowledgeDistillation(temperature=T, alpha=0.0)(student, {"teacher_logits": f, "label": y})
    (grad_ours,) = torch.autograd.grad(ours, student)

    class_logits = torch.logsumexp(student.view(B, C, S), dim=-1)
    theirs = _torchdistill_kd(T, 0.0)(_io("fc", class_logits), _io("fc", f), y)
    (grad_theirs,) = torch.autograd.grad(theirs, student)

    assert_close(ours, T * T * theirs, **TIGHT)
    assert_close(grad_ours, T * T * grad_theirs, **TIGHT)


@pytest.mark.parametrize(("T", "alpha"), [(1.0, 0.5), (4.0, 0.1), (2.0, 0.9)])
@pytest.mark.parametrize(("B", "C"), [(8, 2), (32, 7)])
def test_kd_with_labels_equals_torchdistill_kdloss(T, alpha, B, C):
    """``KnowledgeDistillation(temperature=T, alpha=α)`` == ``KDLoss(temperature=T, alpha=α,
    reduction='batchmean', ignore_index=-1)`` (factor 1): both are α·CE(y, softmax(g)) + (1−α)·T²·KL, the CE
    a mean over the rows whose label is known (torchdistill's ``ignore_index`` = our hidden label −1)."""
    f, student, y = _kd_case(B, C, 1, seed=B + C, hidden_rows=(1, 4))
    ours = KnowledgeDistillation(temperature=T, alpha=alpha)(student, {"teacher_logits": f, "label": y})
    (grad_ours,) = torch.autograd.grad(ours, student)

    theirs = _torchdistill_kd(T, alpha, ignore_index=HIDDEN)(_io("fc", student), _io("fc", f), y)
    (grad_theirs,) = torch.autograd.grad(theirs, student)

    assert_close(ours, theirs, **TIGHT)
    assert_close(grad_ours, grad_theirs, **TIGHT)


# -- RKD --------------------------------------------------------------------------------------------------
def _rkd_case(B, seed, student_dim=6, teacher_dim=10):
    g = _generator(seed)
    s = torch.randn(B, student_dim, generator=g, dtype=torch.float64).requires_grad_(True)
    t = torch.randn(B, teacher_dim, generator=g, dtype=torch.float64) * 3 + 1
    return s, t


def _distance_factor(B):
    return B * B / (B * (B - 1))  # all B² entries vs the B(B−1) ordered pairs i ≠ j


def _angle_factor(B):
    return B ** 3 / (B * (B - 1) * (B - 2))  # all B³ entries vs the B(B−1)(B−2) distinct ordered triplets


def _ours_and_theirs_rkd(s, t, ours_weights, theirs_factors):
    ours = RelationalKD(*ours_weights)(None, {"student_embedding": s, "teacher_embedding": t})
    (grad_ours,) = torch.autograd.grad(ours, s)
    rkd = RKDLoss("emb", "emb", dist_factor=theirs_factors[0], angle_factor=theirs_factors[1], reduction="mean")
    theirs = rkd(_io("emb", s), _io("emb", t))
    (grad_theirs,) = torch.autograd.grad(theirs, s)
    return ours, theirs, grad_ours, grad_theirs


@pytest.mark.parametrize("B", [2, 8, 32])
def test_rkd_distance_term_is_torchdistill_times_b_over_b_minus_1(B):
    """``RelationalKD(distance_weight=1, angle_weight=0)`` == B/(B−1) × ``RKDLoss(dist_factor=1, angle_factor=0,
    reduction='mean')``. Both normalise the distances by their mean over pairs i ≠ j and compare them with
    smooth L1 (δ = 1); theirs averages over all B² entries, whose diagonal is 0 − 0, ours over the B(B−1)
    pairs i ≠ j: factor B²/(B(B−1)) = B/(B−1)."""
    s, t = _rkd_case(B, seed=B)
    ours, theirs, grad_ours, grad_theirs = _ours_and_theirs_rkd(s, t, (1.0, 0.0), (1.0, 0.0))
    assert _distance_factor(B) == B / (B - 1)
    assert_close(ours, _distance_factor(B) * theirs, **TIGHT)
    assert_close(grad_ours, _distance_factor(B) * grad_theirs, **TIGHT)


@pytest.mark.parametrize("B", [3, 8, 32])
def test_rkd_angle_term_is_torchdistill_times_b2_over_b_minus_1_b_minus_2(B):
    """``RelationalKD(distance_weight=0, angle_weight=1)`` == B²/((B−1)(B−2)) × ``RKDLoss(dist_factor=0,
    angle_factor=1, reduction='mean')``. Both compare cos∠(e_b − e_a, e_c − e_a) with smooth L1; theirs
    averages over all B³ (a,b,c), ours over the B(B−1)(B−2) distinct triplets. Every other entry is 0 on both
    sides: a = b or a = c gives a zero vector (cos 0 for student and teacher), b = c gives cos 1 for both."""
    s, t = _rkd_case(B, seed=100 + B)
    ours, theirs, grad_ours, grad_theirs = _ours_and_theirs_rkd(s, t, (0.0, 1.0), (0.0, 1.0))
    assert _angle_factor(B) == pytest.approx(B * B / ((B - 1) * (B - 2)), rel=1e-15)
    assert_close(ours, _angle_factor(B) * theirs, **TIGHT)
    assert_close(grad_ours, _angle_factor(B) * grad_theirs, **TIGHT)


@pytest.mark.parametrize("B", [3, 16])
@pytest.mark.parametrize(("wd", "wa"), [(1.0, 2.0), (0.5, 3.0)])
def test_rkd_weighted_sum_is_torchdistill_with_rescaled_factors(B, wd, wa):
    """``RelationalKD(distance_weight=λ_D, angle_weight=λ_A)`` (paper defaults 1, 2) == ``RKDLoss(
    dist_factor=λ_D·B/(B−1), angle_factor=λ_A·B²/((B−1)(B−2)), reduction='mean')``: the two terms' factors
    differ, so one torchdistill config with rescaled weights reproduces ours exactly."""
    s, t = _rkd_case(B, seed=200 + B, student_dim=4, teacher_dim=4)
    factors = (wd * _distance_factor(B), wa * _angle_factor(B))
    ours, theirs, grad_ours, grad_theirs = _ours_and_theirs_rkd(s, t, (wd, wa), factors)
    assert_close(ours, theirs, **TIGHT)
    assert_close(grad_ours, grad_theirs, **TIGHT)


# -- FitNets hint (embedding matching) --------------------------------------------------------------------
@pytest.mark.parametrize(("B", "Ds", "Dt"), [(4, 3, 5), (32, 8, 8), (17, 16, 6)])
def test_embedding_matching_is_torchdistill_fitnet_sum_mse_over_2b(B, Ds, Dt):
    """``EmbeddingMatching()`` == 1/(2B) × torchdistill's FitNets hint criterion, built as in its
    configs/sample/ilsvrc2012/fitnet sample: ``MSELoss(reduction='sum')`` in a ``SimpleLossWrapper`` whose input
    is the student's regressor output (here our r(h_s)) and whose target is the teacher's hint output h.
    Ours is ½·mean_i ‖h_i − r(h_s,i)‖², theirs Σ_i ‖h_i − r(h_s,i)‖²: factor 1/(2B), gradients too."""
    g = _generator(B + Ds + Dt)
    h_s = torch.randn(B, Ds, generator=g, dtype=torch.float64).requires_grad_(True)
    h = torch.randn(B, Dt, generator=g, dtype=torch.float64) * 2
    ours_obj = EmbeddingMatching()  # r comes from a checkpoint-style state dict (builds it, no data module needed)
    ours_obj.load_state_dict({"projection.weight": torch.randn(Dt, Ds, generator=g, dtype=torch.float64),
                              "projection.bias": torch.randn(Dt, generator=g, dtype=torch.float64)})
    ours_obj.double()
    ours = ours_obj(None, {"student_embedding": h_s, "teacher_embedding": h})
    grad_ours = torch.autograd.grad(ours, [h_s, ours_obj.projection.weight])

    hint = get_mid_level_loss(
        {"key": "MSELoss", "kwargs": {"reduction": "sum"}},
        {"key": "SimpleLossWrapper",
         "kwargs": {"input": {"is_from_teacher": False, "module_path": "+regressor", "io": "output"},
                    "target": {"is_from_teacher": True, "module_path": "hint", "io": "output"}}})
    theirs = hint(_io("+regressor", ours_obj.projection(h_s)), _io("hint", h), None)
    grad_theirs = torch.autograd.grad(theirs, [h_s, ours_obj.projection.weight])

    assert_close(ours, theirs / (2 * B), **TIGHT)
    for mine, ref in zip(grad_ours, grad_theirs, strict=True):
        assert_close(mine, ref / (2 * B), **TIGHT)
