"""lelp-lightning: distil a large teacher into a small student for binary and few-class problems."""

from lelp_lightning.module import DistillModule
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.strategies.base import SubclassStrategy
from lelp_lightning.objectives.base import Objective

__all__ = ["DistillModule", "DistillDataModule", "SubclassStrategy", "Objective"]
__version__ = "0.1.0"
