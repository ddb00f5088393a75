"""Student networks: read raw inputs (not the teacher's embedding) and emit C·S logits."""

from lelp_lightning.students.cnn import CNNStudent
from lelp_lightning.students.networks import HashedBagStudent, MLPStudent, Student, students
from lelp_lightning.students.static import StaticEmbeddingStudent
from lelp_lightning.students.transformer import TransformerStudent

__all__ = ["Student", "students", "HashedBagStudent", "MLPStudent", "CNNStudent", "StaticEmbeddingStudent",
           "TransformerStudent"]
