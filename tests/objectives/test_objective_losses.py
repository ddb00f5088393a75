"""Every objective against a hand computation (numpy loops) on a tiny batch, gradients against their formulas."""

import itertools

import numpy as np
import pytest
import torch

from lelp_lightning.core import TeacherStatistics
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives import (
    DecoupledKD,
    EmbeddingMatching,
    GroundTruthCrossEntropy,
    KnowledgeDistillation,
    RelationalKD,
    StudentLabelMixing,
    SubclassCrossEntropy,
    WeightedDistillation,
    objectives,
)


@pytest.fixture(autouse=True, scope="module")
def _float64():
    """Hand computations in float64 (objectives' own parameters too), restored after this module."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def softmax(x, T=1.0):
    z = np.asarray(x, dtype=np.float64) / T
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def batch_of(B=5, C=3, seed=0, labels=None, **extra):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(B, C)) * 2
    g = rng.normal(size=(B, C)) * 2
    y = rng.integers(0, C, size=B) if labels is None else np.asarray(labels)
    batch = {"teacher_logits": torch.tensor(f), "label": torch.tensor(y),
             "subclass_logits": torch.zeros(B, C, 1), **{k: torch.tensor(v) for k, v in extra.items()}}
    return batch, torch.tensor(g, requires_grad=True), f, g, y


def huber(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# -- registry ---------------------------------------------------------------------------------------------
def test_every_method_is_registered_under_its_short_name():
    methods = {"ce", "subclass_ce", "kd", "dkd", "embedding_matching", "rkd", "slam", "weighted_kd"}
    assert methods <= set(objectives.names())
    assert objectives.get("kd") is KnowledgeDistillation  # `class_path: kd` names the class itself
    with pytest.raises(LelpError, match="valid names"):
        objectives.get("fitnetz")


# -- KD ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("T", "alpha"), [(1.0, 0.0), (4.0, 0.0), (2.0, 0.3)])
def test_kd_matches_hand_computation_and_gradient_formula(T, alpha):
    batch, g_t, f, g, y = batch_of(B=6, C=3, labels=[0, 1, 2, 1, -1, 0])  # one hidden label
    loss = KnowledgeDistillation(temperature=T, alpha=alpha)(g_t, batch)
    p, q = softmax(f, T), softmax(g, T)
    soft = np.mean([T * T * np.sum(p[i] * np.log(p[i] / q[i])) for i in range(6)])
    known = [i for i in range(6) if y[i] >= 0]
    hard = np.mean([-np.log(softmax(g)[i, y[i]]) for i in known])
    assert loss.item() == pytest.approx((1 - alpha) * soft + alpha * hard, rel=1e-10)
    loss.backward()
    expected = (1 - alpha) * T * (q - p) / 6
    onehot = np.eye(3)[np.clip(y, 0, None)] * (y >= 0)[:, None]
    expected += alpha * (softmax(g) - onehot) * (y >= 0)[:, None] / len(known)
    np.testing.assert_allclose(g_t.grad.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_kd_equals_the_subclass_path_with_one_subclass():
    """KD and subclass_ce with S = 1 differ only by the teacher's entropy (a constant): same gradient."""
    batch, g_t, f, g, y = batch_of(B=4, C=2)
    T = 3.0
    KnowledgeDistillation(temperature=T)(g_t, batch).backward()
    g2 = g_t.detach().clone().requires_grad_(True)
    SubclassCrossEntropy(tau=T, student_temperature=True)(g2, batch).backward()
    np.testing.assert_allclose(g_t.grad.numpy(), g2.grad.numpy(), rtol=1e-10)


def test_kd_reads_class_logits_from_a_wider_head():
    batch, _, f, _, _ = batch_of(B=3, C=2)
    wide = torch.randn(3, 2 * 4)  # C·S = 2·4
    cls = torch.logsumexp(wide.view(3, 2, 4), -1)
    kd = KnowledgeDistillation(2.0)
    assert kd(wide, batch).item() == pytest.approx(kd(cls, batch).item())


def test_options_are_checked():
    with pytest.raises(LelpError, match="temperature must be > 0"):
        KnowledgeDistillation(temperature=0)
    with pytest.raises(LelpError, match=r"alpha must be in \[0, 1\]"):
        KnowledgeDistillation(alpha=1.5)
    with pytest.raises(LelpError, match="top_k must be >= 2"):
        StudentLabelMixing(top_k=1)
    with pytest.raises(LelpError, match="hint_epochs must be >= 0"):
        EmbeddingMatching(hint_epochs=-1)
    with pytest.raises(LelpError, match="not both 0"):
        RelationalKD(distance_weight=0, angle_weight=0)


# -- CE with hidden labels --------------------------------------------------------------------------------
def test_ground_truth_ce_skips_hidden_labels_and_is_zero_without_labels():
    batch, g_t, f, g, y = batch_of(B=4, C=3, labels=[2, -1, 0, -1])
    loss = GroundTruthCrossEntropy()(g_t, batch)
    assert loss.item() == pytest.approx(-(np.log(softmax(g)[0, 2]) + np.log(softmax(g)[2, 0])) / 2)
    batch["label"] = torch.full((4,), -1)
    none = GroundTruthCrossEntropy()(g_t, batch)
    assert none.item() == 0.0 and none.requires_grad
    assert SubclassCrossEntropy(alpha=0.5)(g_t, batch).isfinite()


# -- DKD --------------------------------------------------------------------------------------------------
def test_dkd_matches_hand_computation_for_three_classes():
    batch, g_t, f, g, y = batch_of(B=5, C=3, seed=1)
    T, a, b = 2.0, 1.5, 8.0
    loss = DecoupledKD(temperature=T, tckd_weight=a, nckd_weight=b)(g_t, batch)
    p, q = softmax(f, T), softmax(g, T)
    total = 0.0
    for i in range(5):
        t = y[i]
        bt, bs = np.array([p[i, t], 1 - p[i, t]]), np.array([q[i, t], 1 - q[i, t]])
        rest = [c for c in range(3) if c != t]
        pt, qs = p[i, rest] / p[i, rest].sum(), q[i, rest] / q[i, rest].sum()
        total += T * T * (a * np.sum(bt * np.log(bt / bs)) + b * np.sum(pt * np.log(pt / qs)))
    assert loss.item() == pytest.approx(total / 5, rel=1e-10)


def test_dkd_reduces_to_vanilla_kd_for_binary_problems():
    """C = 2: one non-target class, so NCKD = 0 whatever its weight, and TCKD is the binary KL of KD."""
    batch, g_t, f, g, y = batch_of(B=7, C=2, seed=2)
    T = 4.0
    dkd = DecoupledKD(temperature=T, tckd_weight=1.0, nckd_weight=8.0)(g_t, batch)
    g2 = g_t.detach().clone().requires_grad_(True)
    kd = KnowledgeDistillation(temperature=T)(g2, batch)
    assert dkd.item() == pytest.approx(kd.item(), rel=1e-12)
    dkd.backward()
    kd.backward()
    np.testing.assert_allclose(g_t.grad.numpy(), g2.grad.numpy(), rtol=1e-10)
    assert DecoupledKD(T, 1.0, 0.0)(g_t, batch).item() == pytest.approx(dkd.item(), rel=1e-12)


def test_dkd_uses_the_teachers_argmax_where_the_label_is_hidden():
    batch, g_t, f, _, _ = batch_of(B=4, C=3, seed=3)
    batch["label"] = torch.full((4,), -1)
    hidden = DecoupledKD()(g_t, batch)
    batch["label"] = torch.tensor(f.argmax(1))
    assert hidden.item() == pytest.approx(DecoupledKD()(g_t, batch).item())


# -- RKD --------------------------------------------------------------------------------------------------
def rkd_by_hand(s, t, wd, wa):
    B = len(s)
    pairs = [(i, j) for i in range(B) for j in range(B) if i != j]
    ds = {p: np.linalg.norm(s[p[0]] - s[p[1]]) for p in pairs}
    dt = {p: np.linalg.norm(t[p[0]] - t[p[1]]) for p in pairs}
    ms, mt = np.mean(list(ds.values())), np.mean(list(dt.values()))
    l_d = np.mean([huber(ds[p] / ms - dt[p] / mt) for p in pairs])

    def cos(e, a, b, c):
        u, v = e[b] - e[a], e[c] - e[a]
        return u @ v / np.linalg.norm(u) / np.linalg.norm(v)

    triplets = list(itertools.permutations(range(B), 3))
    l_a = np.mean([huber(cos(s, *x) - cos(t, *x)) for x in triplets])
    return wd * l_d + wa * l_a


def test_rkd_matches_hand_computation_with_mismatched_dimensions():
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(6, 3)), rng.normal(size=(6, 5)) * 3
    obj = RelationalKD(distance_weight=1.0, angle_weight=2.0)
    s_t = torch.tensor(s, requires_grad=True)
    loss = obj(torch.zeros(6, 2), {"student_embedding": s_t, "teacher_embedding": torch.tensor(t)})
    assert loss.item() == pytest.approx(rkd_by_hand(s, t, 1.0, 2.0), rel=1e-9)
    loss.backward()
    assert torch.isfinite(s_t.grad).all() and s_t.grad.abs().sum() > 0
    # invariant to a scaled, rotated, shifted teacher (only relations count): loss is unchanged
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    moved = obj(torch.zeros(6, 2),
                {"student_embedding": torch.tensor(s), "teacher_embedding": torch.tensor(7 * t @ Q + 1)})
    assert moved.item() == pytest.approx(loss.item(), rel=1e-9)


def test_rkd_of_a_student_that_copies_the_teacher_is_zero_and_tiny_batches_are_safe():
    t = torch.randn(5, 4)
    copied = RelationalKD()(None, {"student_embedding": 2 * t, "teacher_embedding": t})
    assert copied.item() == pytest.approx(0.0, abs=1e-12)
    one = torch.randn(1, 4, requires_grad=True)
    assert RelationalKD()(None, {"student_embedding": one, "teacher_embedding": torch.randn(1, 4)}).item() == 0.0


# -- embedding matching -----------------------------------------------------------------------------------

class FakeStudent(torch.nn.Module):
    embedding_dim = 3


@pytest.mark.parametrize("standardize", [False, True])
def test_embedding_matching_matches_hand_computation_and_gradient(standardize):
    rng = np.random.default_rng(5)
    train = (rng.normal(size=(50, 4)) * [1, 2, 3, 4] + 5).astype(np.float32)
    obj = EmbeddingMatching(standardize=standardize)
    obj.setup(FakeStudent(), TeacherStatistics(train))
    W, b = obj.projection.weight.detach().numpy(), obj.projection.bias.detach().numpy()
    assert W.shape == (4, 3)
    hs, h = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    hs_t = torch.tensor(hs, requires_grad=True)
    loss = obj(None, {"student_embedding": hs_t, "teacher_embedding": torch.tensor(h)})
    target = (h - train.astype(np.float64).mean(0)) / train.astype(np.float64).std(0) if standardize else h
    resid = target - (hs @ W.T + b)
    assert loss.item() == pytest.approx(0.5 * (resid ** 2).sum(1).mean(), rel=1e-5)
    loss.backward()
    np.testing.assert_allclose(hs_t.grad.numpy(), -resid @ W / 6, rtol=1e-5, atol=1e-8)
    assert obj.projection.weight.grad is not None  # r trains with the student


def test_embedding_matching_rebuilds_from_a_checkpoint_without_setup():
    obj = EmbeddingMatching(standardize=True)
    obj.setup(FakeStudent(), TeacherStatistics(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)))
    state = obj.state_dict()
    fresh = EmbeddingMatching(standardize=True)
    fresh.load_state_dict(state)
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value)
    obj.setup(FakeStudent(), None)  # a second setup (fit, then test) keeps the trained r


def test_embedding_matching_stages():
    assert [EmbeddingMatching().stage(e) for e in range(3)] == ["on"] * 3
    assert [EmbeddingMatching(hint_epochs=2).stage(e) for e in range(4)] == ["alone", "alone", "off", "off"]


# -- SLaM -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("C", "k"), [(2, 2), (4, 2), (4, 3)])
def test_slam_matches_hand_computation(C, k):
    rng = np.random.default_rng(C + k)
    alpha = rng.uniform(0.4, 1.0, size=5)
    batch, g_t, f, g, y = batch_of(B=5, C=C, seed=C * k, teacher_accuracy=alpha)
    tau = 2.0
    loss = StudentLabelMixing(tau=tau, top_k=k)(g_t, batch)
    fs, target = softmax(g), softmax(f, tau)
    total = 0.0
    for i in range(5):
        top = np.argsort(-f[i])[:k]
        mix = [alpha[i] * fs[i, c] + (1 - alpha[i]) * (1 - fs[i, c]) * (c in top) for c in range(C)]
        total += -sum(target[i, c] * np.log(mix[c]) for c in range(C))
    assert loss.item() == pytest.approx(total / 5, rel=1e-10)


def test_slam_binary_gradient_formula_and_limits():
    """C = 2: mix_c = (2α−1)·f_c + 1 − α, so ∂L/∂g_j = −Σ_c y_c/mix_c·(2α−1)·f_c(δ_cj − f_j) / B."""
    alpha = np.array([0.9, 0.6, 0.75, 1.0])
    batch, g_t, f, g, y = batch_of(B=4, C=2, seed=9, teacher_accuracy=alpha)
    StudentLabelMixing()(g_t, batch).backward()
    fs, yt = softmax(g), softmax(f)
    mix = (2 * alpha[:, None] - 1) * fs + 1 - alpha[:, None]
    jac = fs[:, :, None] * (np.eye(2)[None] - fs[:, None, :])  # ∂f_c/∂g_j
    expected = -np.einsum("bc,bcj->bj", yt / mix * (2 * alpha[:, None] - 1), jac) / 4
    np.testing.assert_allclose(g_t.grad.numpy(), expected, rtol=1e-9, atol=1e-12)
    # α = 1 everywhere: SLaM is the plain soft cross-entropy to the teacher
    batch["teacher_accuracy"] = torch.ones(4)
    plain = -(softmax(f) * np.log(softmax(g))).sum(1).mean()
    assert StudentLabelMixing()(g_t, batch).item() == pytest.approx(plain, rel=1e-10)


def test_slam_and_weighted_kd_can_train_on_the_transfer_set_only():
    labels = [0, -1, 1, -1]
    batch, g_t, f, g, y = batch_of(B=4, C=2, labels=labels, teacher_accuracy=np.full(4, 0.8), weight=np.ones(4))
    sub = {k: v[[1, 3]] for k, v in batch.items()}
    for obj in (StudentLabelMixing(unlabeled_only=True), WeightedDistillation(unlabeled_only=True)):
        assert obj(g_t, batch).item() == pytest.approx(type(obj)()(g_t[[1, 3]], sub).item(), rel=1e-12)


# -- weighted distillation --------------------------------------------------------------------------------
def test_weighted_kd_matches_hand_computation():
    w = np.array([0.5, 1.5, 1.0, 0.2, 1.8])
    batch, g_t, f, g, y = batch_of(B=5, C=3, seed=6, weight=w)
    T, alpha = 2.0, 0.25
    loss = WeightedDistillation(temperature=T, alpha=alpha)(g_t, batch)
    p, q = softmax(f, T), softmax(g, T)
    soft = np.mean([w[i] * T * T * np.sum(p[i] * np.log(p[i] / q[i])) for i in range(5)])
    hard = np.mean([-np.log(softmax(g)[i, y[i]]) for i in range(5)])
    assert loss.item() == pytest.approx((1 - alpha) * soft + alpha * hard, rel=1e-10)
    loss.backward()
    expected = (1 - alpha) * T * w[:, None] * (q - p) / 5 + alpha * (softmax(g) - np.eye(3)[y]) / 5
    np.testing.assert_allclose(g_t.grad.numpy(), expected, rtol=1e-9, atol=1e-12)
    batch["weight"] = torch.ones(5)  # unit weights: plain KD
    assert WeightedDistillation(T)(g_t, batch).item() == pytest.approx(KnowledgeDistillation(T)(g_t, batch).item())
