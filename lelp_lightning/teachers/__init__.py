"""Teachers: anything that maps a batch of inputs to (embedding [B,D], logits [B,C]) with a final linear layer.

Each registers a short name in :data:`teachers` (``class_path: sentence_encoder``); importing this package
registers the library's own.
"""

from lelp_lightning.teachers.base import Teacher, teachers
from lelp_lightning.teachers.cnn import CNNTeacher
from lelp_lightning.teachers.file_teacher import FileTeacher
from lelp_lightning.teachers.finetuned import FineTunedClassifierTeacher
from lelp_lightning.teachers.hf_classifier import HFSequenceClassifierTeacher
from lelp_lightning.teachers.prompted_lm import PromptedLMTeacher
from lelp_lightning.teachers.sentence_encoder import SentenceEncoderTeacher

__all__ = ["Teacher", "teachers", "SentenceEncoderTeacher", "HFSequenceClassifierTeacher", "CNNTeacher",
           "FineTunedClassifierTeacher", "PromptedLMTeacher", "FileTeacher"]
