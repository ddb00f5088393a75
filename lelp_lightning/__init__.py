"""lelp-lightning: distil a large teacher into a small student for binary and few-class problems.

The public classes are imported on first use (PEP 562), so that a torch-free part of the package (the exported
student's predictor, :mod:`lelp_lightning.serving`) can be imported without torch or Lightning.
"""

import importlib

_PUBLIC = {"AutoWandbLogger": "lelp_lightning.loggers", "DistillModule": "lelp_lightning.module",
           "DistillDataModule": "lelp_lightning.data.datamodule", "SubclassStrategy": "lelp_lightning.strategies.base",
           "Objective": "lelp_lightning.objectives.base"}

__all__ = ["AutoWandbLogger", "DistillModule", "DistillDataModule", "SubclassStrategy", "Objective"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lelp_lightning' has no attribute {name!r}")
