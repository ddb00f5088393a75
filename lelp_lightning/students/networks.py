"""Small student networks. ``input_dim`` and ``num_outputs`` (= C·S) are linked from the data module."""

from __future__ import annotations

import torch
from torch import nn

from lelp_lightning.errors import LelpError
from lelp_lightning.optim import SPARSE_OPTIMIZERS, LazyAdam
from lelp_lightning.registry import Registry

students = Registry("student", "lelp_lightning.students")


class DenseExport(nn.Module):
    """A student on dense features in an exported graph: the graph's inputs → (``features``, an encoder in the
    graph, or the one input itself) → the student's logits."""

    def __init__(self, student: nn.Module, features: nn.Module | None = None):
        super().__init__()
        self.student, self.features = student, features

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.student(self.features(*inputs) if self.features is not None else inputs[0])


class BagExport(nn.Module):
    """A hashed-bag student on padded (ids, weights) [N, L]: each row's weighted sum of its table rows, then the rest.

    ONNX has no EmbeddingBag: a Gather and a batched MatMul ([N,1,L] @ [N,L,D]), zero weights on the padding, rather
    than a scatter-add over flat entries, which onnxruntime runs element by element (measured 18× slower at batch
    256)."""

    def __init__(self, student: HashedBagStudent):
        super().__init__()
        self.student = student

    def forward(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        bag = torch.matmul(weights.unsqueeze(1), self.student.embedding.weight[ids]).squeeze(1)
        return self.student.head(self.student.body(bag))


class Student(nn.Module):
    """Base of students: ``forward(inputs) = head(embed(inputs)) -> logits [B, num_outputs]``.

    ``embed`` maps raw inputs to the student's embedding ``h_s [B, embedding_dim]``, the input of its final
    linear layer ``head`` (the counterpart of the teacher's embedding); objectives that match
    representations (FitNets, RKD) read it.
    """

    head: nn.Linear
    embedding_dim: int

    def __init_subclass__(cls, name: str | None = None, description: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            students.register(cls, name, description or "")
            cls.registered_name = name

    def __init__(self, input_dim: int, num_outputs: int):
        super().__init__()
        if input_dim < 1 or num_outputs < 1:
            raise LelpError(f"{type(self).__name__} needs input_dim >= 1 and num_outputs >= 1, "
                            f"got {input_dim} and {num_outputs}.")
        self.input_dim, self.num_outputs = input_dim, num_outputs

    def embed(self, inputs) -> torch.Tensor:
        """The student's embedding h_s [B, embedding_dim] (everything before the final linear layer)."""
        raise NotImplementedError

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse (rows of a table a batch touches); the model trains them with a
        sparse-aware optimiser (:meth:`sparse_optimizer`) and the rest with AdamW. Default: none."""
        return []

    def sparse_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The optimiser of :meth:`sparse_parameters`, ``lr`` being the model's. Default: lazy Adam."""
        return LazyAdam(self.sparse_parameters(), lr=lr)

    def start_from(self, featurizer) -> None:
        """Initialise weights from what the run's featuriser built (a distilled token table, a pretrained body),
        once per fit: the model's ``setup`` calls it before the optimiser exists and before a checkpoint (resume,
        validate, test) restores the trained weights over it. Default: nothing (the student starts from its init)."""

    def dense_parameter_groups(self, lr: float) -> list[dict]:
        """AdamW's parameter groups for this student's dense parameters, ``lr`` being the model's; a group may set
        its own ``lr`` (a pretrained body slower than a fresh head). Default: one group at the model's lr."""
        sparse = self.sparse_parameters()
        return [{"params": [p for p in self.parameters() if all(p is not s for s in sparse)]}]

    def forward(self, inputs) -> torch.Tensor:
        return self.head(self.embed(inputs))

    def export_module(self, spec) -> nn.Module:
        """The module ``lelp export`` puts in the ONNX graph: the featuriser's graph inputs (``spec``, its
        :class:`~lelp_lightning.data.featurizers.ExportSpec`) → this student's logits [N, num_outputs]; ``lelp
        export`` appends the class probabilities. Default: dense features in, ``forward`` as in training; a
        student reading other inputs overrides it, or refuses a featuriser it cannot read with one sentence."""
        if spec.feeds != "dense":
            raise LelpError(f"the {type(self).__name__} student reads dense features, but the {spec.kind} featuriser "
                            f"feeds it {spec.feeds} inputs; export a run whose featuriser gives dense features.")
        return DenseExport(self, spec.features)


class HashedBagStudent(Student, name="hashed_bag",
                       description="fastText-style mean of hashed n-gram embeddings, then a C·S linear head."):
    """fastText-style: mean of hashed n-gram embeddings, optional hidden layer, then a C·S linear head.

    ``sparse`` (default): the table's gradient holds only the rows a batch touches, and the table trains with
    lazy Adam (moments of a row move only when the row is used), so a step costs what the batch touches
    rather than the whole ``input_dim × embed_dim`` table; ``sparse: false`` trains it densely with AdamW.
    ``table_optimizer: rowwise_adagrad`` trains the sparse table with row-wise Adagrad instead (one accumulator per
    row, a step moves a third of lazy Adam's memory), at ``table_lr`` (default: the model's ``lr``).
    """

    def __init__(self, input_dim: int = 2**18, num_outputs: int = 2, embed_dim: int = 64, hidden_dim: int = 0,
                 dropout: float = 0.0, sparse: bool = True, table_optimizer: str = "lazy_adam",
                 table_lr: float | None = None):
        super().__init__(input_dim, num_outputs)
        if table_optimizer not in SPARSE_OPTIMIZERS:
            raise LelpError(f"{self.registered_name}'s table_optimizer is {table_optimizer!r}; expected one of "
                            f"{sorted(SPARSE_OPTIMIZERS)}.")
        if not sparse and (table_optimizer != "lazy_adam" or table_lr is not None):
            raise LelpError(f"{self.registered_name}'s table_optimizer and table_lr apply to a sparse table; with "
                            "sparse: false the table trains with AdamW at the model's lr (remove them, or set sparse: "
                            "true).")
        if table_lr is not None and not table_lr > 0:
            raise LelpError(f"{self.registered_name}'s table_lr must be > 0 (or null for the model's lr), "
                            f"got {table_lr}.")
        self.sparse, self.table_optimizer, self.table_lr = sparse, table_optimizer, table_lr
        self.embedding = nn.EmbeddingBag(input_dim, embed_dim, mode="sum", sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=0.1)
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        if hidden_dim:
            layers += [nn.Linear(embed_dim, hidden_dim), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.embedding_dim = hidden_dim or embed_dim
        self.head = nn.Linear(self.embedding_dim, num_outputs)

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        bag = self.embedding(inputs["ids"], inputs["offsets"], per_sample_weights=inputs["weights"])
        return self.body(bag)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.weight] if self.sparse else []

    def export_module(self, spec) -> nn.Module:
        """The bag as a Gather and a MatMul on the hashed featuriser's padded (ids, weights)."""
        if spec.feeds != "bag":
            raise LelpError(f"the hashed_bag student reads hashed n-gram bags, but the {spec.kind} featuriser feeds "
                            f"it {spec.feeds} inputs; pair it with HashedNgramFeaturizer.")
        return BagExport(self)

    def sparse_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return SPARSE_OPTIMIZERS[self.table_optimizer](self.sparse_parameters(), lr=self.table_lr or lr)


class MLPStudent(Student, name="mlp", description="An MLP over dense input features, then a C·S linear head."):
    """An MLP over dense features (a smaller encoder's output, pixels): input → hidden → ... → C·S."""

    def __init__(self, input_dim: int = 384, num_outputs: int = 2, hidden_dims: tuple[int, ...] = (128,),
                 dropout: float = 0.0):
        super().__init__(input_dim, num_outputs)
        layers: list[nn.Module] = []
        prev = input_dim
        for h in hidden_dims:
            layers += [nn.Linear(prev, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            prev = h
        self.body = nn.Sequential(*layers)
        self.embedding_dim = prev
        self.head = nn.Linear(prev, num_outputs)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs)
