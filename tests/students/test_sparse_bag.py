"""The hashed bag's sparse path: the same gradients as the dense table, lazy Adam (or row-wise Adagrad) on the rows a
batch touches, and a clear refusal where sparse gradients cannot go (FSDP, NCCL)."""

import numpy as np
import pytest
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.module import DistillModule
from lelp_lightning.objectives import KnowledgeDistillation
from lelp_lightning.optim import LazyAdam, RowwiseAdagrad
from lelp_lightning.students import HashedBagStudent, MLPStudent

BUCKETS, DIM, C = 50, 6, 4


def bag_batch(seed=0, rows=5, width=7):
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(0, BUCKETS // 2, rows * width))  # the upper half of the table is never used
    return {"ids": ids, "offsets": torch.arange(0, rows * width, width),
            "weights": torch.from_numpy(rng.random(rows * width).astype(np.float32))}


def twins(hidden_dim=3):
    dense = HashedBagStudent(BUCKETS, C, DIM, hidden_dim=hidden_dim, sparse=False)
    sparse = HashedBagStudent(BUCKETS, C, DIM, hidden_dim=hidden_dim, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


@pytest.mark.parametrize("hidden_dim", [0, 3])
def test_sparse_gradients_equal_the_dense_ones(hidden_dim):
    dense, sparse = twins(hidden_dim)
    inputs, target = bag_batch(), torch.randint(0, C, (5,), generator=torch.Generator().manual_seed(1))
    for student in (dense, sparse):
        torch.nn.functional.cross_entropy(student(inputs), target).backward()
    assert sparse.embedding.weight.grad.is_sparse and not dense.embedding.weight.grad.is_sparse
    torch.testing.assert_close(sparse.embedding.weight.grad.to_dense(), dense.embedding.weight.grad, rtol=0, atol=1e-7)
    for (name, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters(), strict=True):
        if name != "embedding.weight":
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-7)


def test_the_model_trains_the_table_with_lazy_adam_and_the_rest_with_adamw():
    student = HashedBagStudent(BUCKETS, C, DIM, hidden_dim=3)
    model = DistillModule(student, [KnowledgeDistillation()], num_classes=C, lr=0.01, weight_decay=0.1)
    adamw, lazy = model.configure_optimizers()
    assert not model.automatic_optimization
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(lazy, LazyAdam)
    assert [p for g in lazy.param_groups for p in g["params"]] == [student.embedding.weight]
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert in_adamw == {id(p) for p in model.parameters()} - {id(student.embedding.weight)}
    assert adamw.param_groups[0]["weight_decay"] == 0.1

    dense_model = DistillModule(MLPStudent(input_dim=6, num_outputs=C), num_classes=C)
    assert dense_model.automatic_optimization and isinstance(dense_model.configure_optimizers(), torch.optim.AdamW)


def test_one_lazy_adam_step_moves_only_the_touched_rows_by_the_adam_rule():
    """Hand computation: after one step lazy Adam's (SparseAdam's) update is lr · g / (|g| + eps / √(1 − β₂)) per
    touched entry (m = (1 − β₁)g, v = (1 − β₂)g², step lr·√(1 − β₂)/(1 − β₁), eps added to √v before the bias
    correction)."""
    _, student = twins()
    model = DistillModule(student, [KnowledgeDistillation()], num_classes=C, lr=0.05)
    _, lazy = model.configure_optimizers()
    before = student.embedding.weight.detach().clone()
    inputs = bag_batch()
    student(inputs).pow(2).sum().backward()
    grad = student.embedding.weight.grad.to_dense()
    lazy.step()
    after = student.embedding.weight.detach()
    touched = np.unique(inputs["ids"].numpy())
    untouched = np.setdiff1d(np.arange(BUCKETS), touched)
    torch.testing.assert_close(after[untouched], before[untouched], rtol=0, atol=0)
    g = grad[touched].double()
    expected = before[touched].double() - 0.05 * g / (g.abs() + 1e-8 / np.sqrt(1 - 0.999))
    torch.testing.assert_close(after[touched].double(), expected, rtol=0, atol=1e-6)


def test_fsdp_refuses_a_sparse_table_in_one_sentence(monkeypatch):
    model = DistillModule(HashedBagStudent(BUCKETS, C, DIM), num_classes=C)
    monkeypatch.setattr(DistillModule, "device_mesh", property(lambda self: object()))  # what FSDP2 sets up
    with pytest.raises(LelpError, match="FSDP cannot shard the sparse embedding table.*sparse: false"):
        model.configure_model()


def test_nccl_is_refused_for_sparse_gradients(monkeypatch):
    model = DistillModule(HashedBagStudent(BUCKETS, C, DIM), num_classes=C)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda *a: "nccl")
    with pytest.raises(LelpError, match="NCCL cannot all-reduce the sparse gradients.*gloo"):
        model.on_fit_start()
    monkeypatch.setattr(torch.distributed, "get_backend", lambda *a: "gloo")
    model.on_fit_start()  # gloo all-reduces sparse gradients (the DDP test checks the result)


@pytest.mark.parametrize("coalesced", [False, True])
@pytest.mark.parametrize("deterministic", [False, True])
def test_lazy_adam_follows_torch_sparse_adam_step_for_step(coalesced, deterministic):
    """torch.optim.SparseAdam is the reference: same rows, moments and parameters over many steps with repeated
    rows in a gradient (uncoalesced, as EmbeddingBag's backward gives; or coalesced), steps that skip a parameter,
    a step touching more rows than any before (the kept buffers grow), and a checkpoint round trip of the state
    half way; with deterministic algorithms on, the step leaves the setting as it found it."""
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        _follow_sparse_adam(coalesced)
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def _follow_sparse_adam(coalesced: bool) -> None:
    rng = torch.Generator().manual_seed(3)
    ours = torch.nn.Parameter(torch.randn(40, 5, generator=rng))
    theirs = torch.nn.Parameter(ours.detach().clone())
    mine, reference = LazyAdam([ours], lr=0.03, betas=(0.8, 0.99)), torch.optim.SparseAdam([theirs], lr=0.03,
                                                                                             betas=(0.8, 0.99))
    for step in range(12):
        if step == 6:  # resume from a saved state
            saved = mine.state_dict()
            mine = LazyAdam([ours], lr=0.03, betas=(0.8, 0.99))
            mine.load_state_dict(saved)
        if step % 5 == 4:
            continue  # a batch that did not touch the table
        count = 60 if step == 8 else 30
        rows = torch.randint(0, 20, (1, count), generator=rng)
        grad = torch.sparse_coo_tensor(rows, torch.randn(count, 5, generator=rng), (40, 5), check_invariants=True)
        grad = grad.coalesce() if coalesced else grad
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-7)
    for key in ("exp_avg", "exp_avg_sq"):
        # SparseAdam writes β·m + (1 − β)·g as m + (g − m)(1 − β): equal up to float32 rounding
        torch.testing.assert_close(mine.state[ours][key], reference.state[theirs][key], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours[20:].detach(), theirs[20:].detach(), rtol=0, atol=0)  # never touched


def test_lazy_adam_refuses_a_dense_gradient():
    param = torch.nn.Parameter(torch.zeros(3, 2))
    param.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse gradients only"):
        LazyAdam([param]).step()


def rowwise_adagrad_reference(weight: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]], lr: float, eps: float):
    """Row-wise Adagrad in numpy: per step, sum the repeated rows' gradients, then G_r += mean(g_r²) and
    w_r -= lr · g_r / (√G_r + eps) for the rows touched."""
    weight, accumulator = weight.astype(np.float64).copy(), np.zeros(len(weight))
    for ids, values in steps:
        summed = np.zeros_like(weight)
        np.add.at(summed, ids, values)
        touched = np.unique(ids)
        accumulator[touched] += (summed[touched] ** 2).mean(axis=1)
        weight[touched] -= lr * summed[touched] / (np.sqrt(accumulator[touched]) + eps)[:, None]
    return weight, accumulator


@pytest.mark.parametrize("coalesced", [False, True])
def test_rowwise_adagrad_equals_a_numpy_reference_and_resumes_exactly(coalesced):
    """Repeated rows in a gradient, a step touching more rows than any before, a checkpoint round trip half way;
    the rows never touched stay bit for bit, under deterministic mode (left as found)."""
    rng = np.random.default_rng(4)
    start = rng.normal(size=(40, 5)).astype(np.float32)
    steps = [(rng.integers(0, 20, 60 if k == 5 else 30), rng.normal(size=(60 if k == 5 else 30, 5)))
             for k in range(8)]
    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimizer = RowwiseAdagrad([param], lr=0.2, eps=1e-6)
    torch.use_deterministic_algorithms(True)
    try:
        for k, (ids, values) in enumerate(steps):
            if k == 4:
                saved = optimizer.state_dict()
                optimizer = RowwiseAdagrad([param], lr=0.2, eps=1e-6)
                optimizer.load_state_dict(saved)
            grad = torch.sparse_coo_tensor(torch.from_numpy(ids)[None], torch.from_numpy(values).float(), (40, 5),
                                           check_invariants=True)
            param.grad = grad.coalesce() if coalesced else grad
            optimizer.step()
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    weight, accumulator = rowwise_adagrad_reference(start, steps, lr=0.2, eps=1e-6)
    np.testing.assert_allclose(param.detach().numpy(), weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer.state[param]["sum"].numpy(), accumulator, rtol=1e-5, atol=1e-7)
    assert np.array_equal(param.detach().numpy()[20:], start[20:])


def test_the_bag_trains_its_table_with_the_optimizer_it_names():
    student = HashedBagStudent(BUCKETS, C, DIM, table_optimizer="rowwise_adagrad", table_lr=0.3)
    _, table = DistillModule(student, num_classes=C, lr=0.01).configure_optimizers()
    assert isinstance(table, RowwiseAdagrad) and table.param_groups[0]["lr"] == 0.3
    default_lr = HashedBagStudent(BUCKETS, C, DIM, table_optimizer="rowwise_adagrad")
    assert DistillModule(default_lr, num_classes=C, lr=0.01).configure_optimizers()[1].param_groups[0]["lr"] == 0.01
    with pytest.raises(LelpError, match="table_optimizer is 'adam'; expected one of"):
        HashedBagStudent(BUCKETS, C, DIM, table_optimizer="adam")
    with pytest.raises(LelpError, match="apply to a sparse table"):
        HashedBagStudent(BUCKETS, C, DIM, sparse=False, table_optimizer="rowwise_adagrad")
    with pytest.raises(LelpError, match="table_lr must be > 0"):
        HashedBagStudent(BUCKETS, C, DIM, table_lr=0.0)
