"""Data side: student featurisers, the subclass targets, batches and the DistillDataModule.

The featurisers are imported here so that configs name them by class (``class_path: PixelFeaturizer``).
"""

from lelp_lightning.data.encoder_featurizer import SentenceEncoderFeaturizer
from lelp_lightning.data.featurizers import Featurizer, HashedNgramFeaturizer
from lelp_lightning.data.pixels import PixelFeaturizer
from lelp_lightning.data.static_featurizer import StaticTokenFeaturizer
from lelp_lightning.data.token_featurizer import EncoderTokenFeaturizer

__all__ = ["EncoderTokenFeaturizer", "Featurizer", "HashedNgramFeaturizer", "PixelFeaturizer",
           "SentenceEncoderFeaturizer", "StaticTokenFeaturizer"]
