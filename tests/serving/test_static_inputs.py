"""The static student's raw-text step in the predictor: texts sorted by token count run in short runs, each padded to
its own longest, and every row still gets its own output, whatever the runs and their order."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import tiny_tweets

from lelp_lightning.encoders import resolve_model_path
from lelp_lightning.serving import Predictor
from lelp_lightning.serving.predictor import StaticTokenInputs

MAX_LENGTH, MEDIAN_TOKEN_CHARS = 16, 6


@pytest.fixture(scope="module")
def mean_id_export(tmp_path_factory):
    """An export folder whose graph outputs each row's weighted sum of its token ids (its kept tokens' mean id):
    a row-wise function that padding cannot change, on MiniLM's tokenizer."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path_factory.mktemp("mean-id-export")
    shutil.copyfile(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json", folder / "tokenizer.json")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["ids_f", "weights"], ["weighted"]),
         helper.make_node("ReduceSum", ["weighted", "axis"], ["probabilities"], keepdims=1)],
        "mean_id",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", "tokens"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "student.onnx")
    spec = {"kind": "static_tokens", "tokenizer": "tokenizer.json", "max_length": MAX_LENGTH,
            "max_chars": MAX_LENGTH * MEDIAN_TOKEN_CHARS, "unk_id": 100, "inputs": ["ids", "weights"]}
    (folder / "featurizer.json").write_text(json.dumps(spec))
    (folder / "labels.json").write_text(json.dumps({"labels": ["mean token id"]}))
    (folder / "model_card.json").write_text("{}")
    return folder


def mean_token_ids(texts: list[str]) -> np.ndarray:
    """The reference, one text at a time: model2vec's tokenisation (character cut, no special tokens, truncation,
    the unknown token dropped), then the mean of the kept ids (0 for none)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads and truncates to 128
    tokenizer.no_truncation()
    out = []
    for text in texts:
        ids = tokenizer.encode(text[: MAX_LENGTH * MEDIAN_TOKEN_CHARS], add_special_tokens=False).ids[:MAX_LENGTH]
        kept = [i for i in ids if i != 100]
        out.append(np.mean(kept) if kept else 0.0)
    return np.asarray(out, np.float64)[:, None]


@pytest.mark.parametrize("batch_size", [1, 7, 64, 256])
def test_each_row_gets_its_own_output_in_sorted_runs(mean_id_export, batch_size):
    tweets = tiny_tweets()
    texts = tweets.split("test").texts + ["", "☃", "the end " * 80, "a"] + tweets.split("train").texts
    assert len(texts) > 2 * StaticTokenInputs.RUN_ROWS  # several runs at the larger batch sizes
    served = Predictor.load(mean_id_export, threads=1).predict_proba(texts, batch_size=batch_size)
    np.testing.assert_allclose(served, mean_token_ids(texts), rtol=1e-6, atol=1e-3)


def test_a_run_is_padded_to_its_own_longest_row_only(mean_id_export):
    """Sorted runs pad less than one batch: the arrays the graph receives, recorded run by run."""
    predictor = Predictor.load(mean_id_export, threads=1)
    texts = ["a"] * 70 + ["the end " * 80]  # one long row among short ones
    widths = []
    session = predictor.session

    class Recording:
        def run(self, names, feeds):
            widths.append(feeds["ids"].shape)
            return session.run(names, feeds)

    predictor.featurize.run(Recording(), texts, np.zeros((len(texts), 1), np.float32), 256)
    assert widths == [(64, 1), (7, MAX_LENGTH)]  # the 64 shortest alone, then the rest with the long row
