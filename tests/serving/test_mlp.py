"""The MLP student on MiniLM features, exported with the encoder inside the graph, predicted from raw text."""

import json

import numpy as np
import pytest
from helpers import CONFIGS, tiny_run_args

from .exports import assert_matches_eager, fit_and_export, modules_imported_by_prediction


@pytest.fixture(scope="module")
def mlp(tweets_cache_dir, tmp_path_factory):
    """The MLP student over all-MiniLM-L6-v2 features (max_length 64: the teacher's cached encoder entry)."""
    root = tmp_path_factory.mktemp("mlp")
    return fit_and_export(root, *tiny_run_args(tweets_cache_dir, root,
                                               "--config", str(CONFIGS / "student/mlp_minilm.yaml"),
                                               "--data.featurizer.init_args.max_length", "64", wandb=False))


def test_exported_mlp_with_its_encoder_equals_eager_pytorch_on_the_test_split(mlp):
    spec = json.loads((mlp.folder / "featurizer.json").read_text())
    assert (spec["kind"], spec["max_length"], spec["normalize"]) == ("sentence_encoder", 64, True)
    assert (mlp.folder / "tokenizer.json").is_file()
    assert_matches_eager(mlp)  # raw text → tokens → encoder in ONNX against the cached torch features
    card = json.loads((mlp.folder / "model_card.json").read_text())
    assert card["student"]["encoder_parameters"] > 20_000_000
    assert card["student"]["parameters"] == 384 * 128 + 128 + 129 * 8


def test_mlp_predictor_imports_neither_torch_nor_lightning(mlp):
    heavy, probabilities = modules_imported_by_prediction(mlp.folder, "['what a great day', 'awful traffic']")
    assert heavy == [] and np.asarray(probabilities).shape == (2, 2)


def test_int8_export_is_smaller_and_agrees_with_eager_pytorch(mlp, tmp_path):
    """--quantize int8: the graph shrinks (int8 weights), the card says so and reports the quantised graph's own test
    accuracy, and its predictions agree with eager PyTorch's on most test rows (not within 1e-5: it is quantised)."""
    from helpers import run_main

    from lelp_lightning.serving import Predictor

    from .exports import eager_test_probabilities

    folder = tmp_path / "int8"
    ran = run_main("export", "--config", str(mlp.config), "--ckpt_path", str(mlp.ckpt), "--output", str(folder),
                   "--quantize", "int8", "--bench_seconds", "0")
    assert ran.returncode == 0, ran.stderr[-3000:]
    fp32, int8 = (json.loads((f / "model_card.json").read_text()) for f in (mlp.folder, folder))
    assert int8["onnx"]["quantization"].startswith("int8") and fp32["onnx"]["quantization"] is None
    assert int8["onnx"]["bytes"] < 0.4 * fp32["onnx"]["bytes"]
    eager, test = eager_test_probabilities(mlp)
    served = Predictor.load(folder).predict_proba(test.texts)
    assert (served.argmax(1) == eager.argmax(1)).mean() >= 0.9
    assert int8["accuracy"]["exported_test"] == pytest.approx((served.argmax(1) == np.asarray(test.labels)).mean())
    assert "quantised: int8" in (folder / "model_card.md").read_text()


def test_token_count_batches_give_each_text_its_own_probabilities(mlp):
    """The predictor tokenises once and runs texts of similar token counts together: every text's probabilities
    equal those of the text run alone (no padding), whatever the input order, and its padded arrays are the
    tokenizers library's own right padding."""
    from tokenizers import Tokenizer

    from lelp_lightning.serving import Predictor

    predictor = Predictor.load(mlp.folder)
    texts = ["ok", "a much longer text about the weather, the traffic and the rest of a long day", "good film",
             "", "the end of the line for this one " * 10]
    together = predictor.predict_proba(texts, batch_size=2)
    alone = np.concatenate([predictor.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    permutation = [3, 0, 4, 2, 1]
    np.testing.assert_allclose(predictor.predict_proba([texts[i] for i in permutation]), together[permutation],
                               atol=1e-5)
    reference = Tokenizer.from_file(str(mlp.folder / "tokenizer.json"))
    spec = json.loads((mlp.folder / "featurizer.json").read_text())
    reference.enable_truncation(spec["max_length"])
    reference.enable_padding(pad_id=spec["pad_id"], pad_token=spec["pad_token"])
    encoded = reference.encode_batch(texts)
    padded = predictor.featurize(texts)
    np.testing.assert_array_equal(padded["input_ids"], [e.ids for e in encoded])
    np.testing.assert_array_equal(padded["attention_mask"], [e.attention_mask for e in encoded])
    assert padded["input_ids"].shape[1] == 64  # the long text is truncated to max_length
