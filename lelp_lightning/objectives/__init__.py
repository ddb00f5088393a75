"""Loss terms; a run's loss is the weighted sum of its objectives (``lelp objectives`` lists them; see
docs/objectives.md for what each computes, its paper and the open choices it makes)."""

from lelp_lightning.objectives.base import Objective, class_logits, objectives, subclass_targets
from lelp_lightning.objectives.cross_entropy import GroundTruthCrossEntropy, SubclassCrossEntropy
from lelp_lightning.objectives.dkd import DecoupledKD
from lelp_lightning.objectives.embedding_matching import EmbeddingMatching
from lelp_lightning.objectives.kd import KnowledgeDistillation
from lelp_lightning.objectives.rkd import RelationalKD
from lelp_lightning.objectives.slam import StudentLabelMixing
from lelp_lightning.objectives.weighted import WeightedDistillation

__all__ = ["Objective", "objectives", "subclass_targets", "class_logits", "SubclassCrossEntropy",
           "GroundTruthCrossEntropy", "KnowledgeDistillation", "DecoupledKD", "EmbeddingMatching", "RelationalKD",
           "StudentLabelMixing", "WeightedDistillation"]
