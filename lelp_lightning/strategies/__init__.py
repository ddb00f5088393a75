"""Pseudo-subclass strategies: each turns teacher embeddings into subclass logits z [N,C,S].

Every strategy registers a short name (``lelp strategies`` lists them, plugins included); see
docs/strategies.md for what each computes and its options.
"""

from lelp_lightning.strategies.agglomerative import AgglomerativeStrategy
from lelp_lightning.strategies.base import RowInfo, SubclassStrategy, strategies
from lelp_lightning.strategies.distributed import fit_strategy
from lelp_lightning.strategies.ensemble import RandomProjectionEnsembleStrategy
from lelp_lightning.strategies.gmm import GaussianMixtureStrategy
from lelp_lightning.strategies.kmeans import KMeansStrategy
from lelp_lightning.strategies.linear_projection import LinearProjectionStrategy, PCAStrategy, RandomProjectionStrategy
from lelp_lightning.strategies.no_subclass import NoSubclassStrategy
from lelp_lightning.strategies.oracle import OracleStrategy
from lelp_lightning.strategies.random_split import RandomSplitStrategy
from lelp_lightning.strategies.subclass_distillation import SubclassDistillationStrategy
from lelp_lightning.strategies.tsne_kmeans import TSNEKMeansStrategy

__all__ = [
    "SubclassStrategy", "RowInfo", "strategies", "fit_strategy", "LinearProjectionStrategy", "PCAStrategy",
    "RandomProjectionStrategy", "NoSubclassStrategy", "KMeansStrategy", "GaussianMixtureStrategy",
    "AgglomerativeStrategy", "TSNEKMeansStrategy", "RandomSplitStrategy", "OracleStrategy",
    "SubclassDistillationStrategy", "RandomProjectionEnsembleStrategy",
]
