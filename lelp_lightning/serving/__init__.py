"""Shipping a distilled student: ``lelp export`` (export.py, needs torch), the torch-free :class:`Predictor`
(predictor.py, numpy + onnxruntime) and ``lelp serve`` (server.py, LitServe). Only the predictor is imported
here, so ``from lelp_lightning.serving import Predictor`` pulls in neither torch nor Lightning."""

from lelp_lightning.serving.predictor import Predictor

__all__ = ["Predictor"]
