"""lelp-lightning: distil a large teacher into a small student for binary and few-class problems."""

from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.loggers import AutoWandbLogger
from lelp_lightning.module import DistillModule
from lelp_lightning.objectives.base import Objective
from lelp_lightning.strategies.base import SubclassStrategy

__all__ = ["AutoWandbLogger", "DistillModule", "DistillDataModule", "SubclassStrategy", "Objective"]
__version__ = "0.1.0"
