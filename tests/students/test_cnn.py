"""CNNStudent: images and flat pixels, its embed/head split, registered as `cnn`."""

import pytest
import torch

from lelp_lightning.errors import LelpError
from lelp_lightning.students import CNNStudent, students


def test_cnn_student_reads_images_and_flat_pixels():
    assert "cnn" in students and students.get("cnn") is CNNStudent
    net = CNNStudent(input_dim=64, num_outputs=6, channels=[4, 8])
    x = torch.rand(5, 1, 8, 8)
    assert net(x).shape == (5, 6) and net.embed(x).shape == (5, net.embedding_dim) == (5, 8 * 2 * 2)
    torch.testing.assert_close(net(x.reshape(5, 64)), net(x))
    torch.testing.assert_close(net(x), net.head(net.embed(x)))
    with pytest.raises(LelpError, match="square"):
        CNNStudent(input_dim=60, num_outputs=2)
