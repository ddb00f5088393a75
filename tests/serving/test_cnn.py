"""The CNN student on pixels, exported with its pixel scaling outside the graph, predicted from uint8 images."""

import json

import numpy as np
import pytest
from helpers import CONFIGS, write_logger_config

from .exports import assert_matches_eager, fit_and_export, modules_imported_by_prediction


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The CNN student on 8×8 digits (flattened pixels), with a small CNN teacher."""
    root = tmp_path_factory.mktemp("cnn")
    return fit_and_export(root, "--config", str(CONFIGS / "quickstart.yaml"),
                          "--config", str(CONFIGS / "experiments/digits.yaml"),
                          "--config", str(CONFIGS / "strategy/oracle.yaml"),
                          "--config", str(CONFIGS / "student/cnn.yaml"),
                          "--config", str(write_logger_config(root, wandb=False)),
                          "--data.cache_dir", str(root / "cache"), "--data.progress", "false",
                          "--data.teacher.init_args.epochs", "3", "--trainer.max_epochs", "2",
                          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                          "--trainer.default_root_dir", str(root))


def test_exported_cnn_equals_eager_pytorch_on_the_test_split(cnn):
    spec = json.loads((cnn.folder / "featurizer.json").read_text())
    assert (spec["kind"], spec["image_shape"], spec["flatten"]) == ("pixels", [8, 8], True)
    assert_matches_eager(cnn)
    heavy, probabilities = modules_imported_by_prediction(cnn.folder, "np.zeros((3, 8, 8), np.uint8)")
    assert heavy == [] and np.asarray(probabilities).shape == (3, 2)
