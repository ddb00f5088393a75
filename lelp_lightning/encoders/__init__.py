"""Frozen text encoders that teachers and student featurisers share (so neither imports the other)."""

from lelp_lightning.encoders.sentence import SentenceEncoder, resolve_model_path

__all__ = ["SentenceEncoder", "resolve_model_path"]
