"""Shipping a distilled student: ``lelp export`` (export.py, needs torch), the torch-free :class:`Predictor`
(predictor.py, numpy + onnxruntime) and ``lelp serve`` (server.py, LitServe). Only the predictor side is imported
here (with :class:`InputBuilder`, the base a new featuriser kind registers its raw-input step on), so
``from lelp_lightning.serving import Predictor`` pulls in neither torch nor Lightning."""

from lelp_lightning.serving.predictor import InputBuilder, Predictor, input_builders

__all__ = ["InputBuilder", "Predictor", "input_builders"]
