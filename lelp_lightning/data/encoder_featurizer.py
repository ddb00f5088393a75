"""Student inputs from a smaller frozen sentence encoder: the paper's "MLP on frozen sentence embeddings" student.

The features cost a pass of the encoder (about 90 texts/s for MiniLM on 2 CPU cores), so they are kept in the
data module's cache as the encoder's ``encoder-`` entry of each split (keyed by the encoder's and the split's
fingerprints; resumable, checksummed): built once, memory-mapped on every later run, and the very entry a
:class:`~lelp_lightning.teachers.SentenceEncoderTeacher` with the same encoder settings reads.
"""

from __future__ import annotations

from lelp_lightning.cache import TeacherCache
from lelp_lightning.core import SPLITS, Source, fingerprint_of
from lelp_lightning.data.featurizers import DenseInputs, Featurizer
from lelp_lightning.encoders import SentenceEncoder


class SentenceEncoderFeaturizer(Featurizer):
    """Each text becomes the (mean-pooled) output of ``encoder``; ``input_dim`` is read from the model's config."""

    def __init__(self, encoder: str = "all-MiniLM-L6-v2", max_length: int = 128, batch_size: int = 64,
                 precision: str = "fp32"):
        self.encoder = SentenceEncoder(encoder, max_length, batch_size, precision)

    @property
    def input_dim(self) -> int:
        return self.encoder.embedding_dim

    def fingerprint(self) -> str:
        return fingerprint_of("SentenceEncoderFeaturizer", {"encoder": self.encoder.fingerprint()})

    def transform(self, texts: list[str]) -> DenseInputs:
        """Features of ``texts`` computed now, without a cache (a few texts outside a data module)."""
        return DenseInputs(self.encoder.embed_all(list(texts)))

    def prepare(self, source: Source, cache: TeacherCache) -> None:
        for split in SPLITS:
            self.encoder.features(source, split, cache)

    def featurize(self, source: Source, split: str, cache: TeacherCache) -> DenseInputs:
        return DenseInputs(self.encoder.features(source, split, cache))
