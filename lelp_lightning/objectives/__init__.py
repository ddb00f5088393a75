"""Loss terms; a run's loss is the weighted sum of its objectives."""

from lelp_lightning.objectives.base import Objective, class_logits, objectives, subclass_targets
from lelp_lightning.objectives.cross_entropy import GroundTruthCrossEntropy, SubclassCrossEntropy

__all__ = ["Objective", "objectives", "subclass_targets", "class_logits", "SubclassCrossEntropy",
           "GroundTruthCrossEntropy"]
