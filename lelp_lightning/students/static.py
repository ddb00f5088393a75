"""The static-embedding student: a token table distilled from an encoder (model2vec), mean-pooled, then a head.

It is the hashed bag's network on another vocabulary: the rows are the tokens of the encoder's tokenizer
(:class:`~lelp_lightning.data.static_featurizer.StaticTokenFeaturizer`), and the table starts from the featuriser's
distilled table (:meth:`StaticEmbeddingStudent.start_from`) instead of noise, so before training its pooled
embedding is model2vec's ``StaticModel.encode`` of the text.
"""

from __future__ import annotations

import torch
from torch import nn

from lelp_lightning.errors import LelpError
from lelp_lightning.students.networks import BagExport, HashedBagStudent


class L2Normalize(nn.Module):
    """Each row divided by its L2 norm (a zero row stays zero), as model2vec's ``encode(normalize=True)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, p=2, dim=-1)


class StaticEmbeddingStudent(HashedBagStudent, name="static",
                             description="A token table distilled from an encoder (model2vec), mean-pooled, "
                                         "a hidden layer, then a C·S linear head."):
    """Mean of the text's token rows (optionally L2-normalised), ``hidden_dim`` ReLU units (0: none), C·S head.

    ``table_dim`` is the distilled table's width (the featuriser's ``pca_dims``), linked from the data module as
    ``input_dim`` is, so the student follows its featuriser (``lelp search`` varies ``pca_dims`` alone); ``embed_dim``
    null (the default) is that width, and a value must equal it. The table trains as the hashed bag's does:
    ``sparse`` (lazy Adam, or ``table_optimizer: rowwise_adagrad`` at ``table_lr``) or dense AdamW. ``normalize``:
    divide the pooled vector by its norm first, as model2vec's ``encode`` does by default for a distilled model (off
    by default: the plain mean is what trained best in the prototype)."""

    def __init__(self, input_dim: int = 29525, num_outputs: int = 2, embed_dim: int | None = None,
                 hidden_dim: int = 512, dropout: float = 0.0, normalize: bool = False, sparse: bool = True,
                 table_optimizer: str = "lazy_adam", table_lr: float | None = None, table_dim: int | None = 256):
        embed_dim = table_dim if embed_dim is None else embed_dim
        if embed_dim is None:
            raise LelpError("the static student's width is its featuriser's distilled table's (table_dim), but the "
                            "run's featuriser has no table; pair it with StaticTokenFeaturizer "
                            "(configs/student/static.yaml).")
        super().__init__(input_dim, num_outputs, embed_dim, hidden_dim, dropout, sparse, table_optimizer, table_lr)
        self.embed_dim, self.normalize = embed_dim, normalize
        self.weights_loaded = False
        if normalize:
            self.body = nn.Sequential(L2Normalize(), *self.body)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """Weights loaded into this student (``lelp active``'s previous round, before this round's fit) are where
        it starts: :meth:`start_from` then leaves the table as loaded."""
        self.weights_loaded = True
        super()._load_from_state_dict(*args, **kwargs)

    def start_from(self, featurizer) -> None:
        """Copy the featuriser's distilled table into the token table, unless weights were loaded into it."""
        initial_table = getattr(featurizer, "initial_table", None)
        if initial_table is None:
            raise LelpError(f"the static student starts from a distilled token table, but the featuriser "
                            f"{type(featurizer).__name__} has none; pair it with StaticTokenFeaturizer "
                            "(configs/student/static.yaml).")
        table = initial_table()
        if table.shape[1] != self.embed_dim:
            raise LelpError(f"model.student.init_args.embed_dim is {self.embed_dim}, but the featuriser's distilled "
                            f"table is {table.shape[1]} wide (data.featurizer.init_args.pca_dims: "
                            f"{featurizer.pca_dims}); leave embed_dim null to follow the table, or set it to "
                            f"{table.shape[1]}.")
        if table.shape[0] != self.input_dim:
            raise LelpError(f"the static student has {self.input_dim} token rows (input_dim) but the featuriser's "
                            f"table has {table.shape[0]}; leave input_dim to the data module's link.")
        if self.weights_loaded:
            return
        with torch.no_grad():
            self.embedding.weight.copy_(torch.from_numpy(table))

    def export_module(self, spec) -> nn.Module:
        """The bag as a Gather and a MatMul on the featuriser's padded (ids, weights)."""
        if spec.feeds != "bag":
            raise LelpError(f"the static student reads token bags, but the {spec.kind} featuriser feeds it "
                            f"{spec.feeds} inputs; pair it with StaticTokenFeaturizer.")
        return BagExport(self)
