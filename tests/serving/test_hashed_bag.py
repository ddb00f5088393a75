"""The hashed-bag student exported, predicted without torch, refused with another config's checkpoint, and served."""

import json
import os
import signal
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from helpers import run_main, tiny_run_args

from .exports import assert_matches_eager, fit_and_export, modules_imported_by_prediction, serving


@pytest.fixture(scope="module")
def bag(tweets_cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bag")
    return fit_and_export(root, *tiny_run_args(tweets_cache_dir, root, "--data.featurizer.init_args.num_buckets",
                                               "16384", wandb=False), bench_seconds=0.2)


def test_exported_bag_equals_eager_pytorch_on_the_test_split(bag):
    assert_matches_eager(bag)


def test_export_folder_and_model_card(bag):
    assert sorted(p.name for p in bag.folder.iterdir()) == ["featurizer.json", "labels.json", "model_card.json",
                                                             "model_card.md", "student.onnx"]
    assert json.loads((bag.folder / "labels.json").read_text()) == {"labels": ["negative", "positive"]}
    spec = json.loads((bag.folder / "featurizer.json").read_text())
    assert (spec["kind"], spec["num_buckets"], spec["max_ngram"]) == ("hashed_ngrams", 16384, 2)
    card = json.loads((bag.folder / "model_card.json").read_text())
    summary = json.loads((bag.config.parent / "summary.json").read_text())
    assert card["accuracy"]["student_test"] == summary["student"]["test_accuracy"]
    assert card["accuracy"]["teacher_test"] == summary["teacher"]["test_accuracy"]
    assert card["data"]["split_sizes"] == {"train": 210, "val": 30, "test": 60}
    assert card["teacher"]["class_path"].endswith("SentenceEncoderTeacher")
    assert card["method"]["num_subclasses"] == 4 and card["method"]["representation"] == "final"
    assert {"tau", "beta", "alpha"} <= set(card["method"]["objectives"][0])
    assert card["student"]["parameters"] == 16384 * 64 + 65 * 8
    assert card["onnx"]["opset"] == 17 and card["onnx"]["bytes"] == (bag.folder / "student.onnx").stat().st_size
    assert card["speed"]["rows_per_s"] > 0 and card["speed"]["latency_ms_p99"] >= card["speed"]["latency_ms_p50"] > 0
    assert card["speed"]["machine"]["cpu"] and card["command"].startswith("lelp export --config ")
    markdown = (bag.folder / "model_card.md").read_text()
    assert "rows/s" in markdown and "opset 17" in markdown and card["speed"]["machine"]["cpu"] in markdown


def test_predictor_imports_neither_torch_nor_lightning(bag):
    heavy, probabilities = modules_imported_by_prediction(bag.folder, "['what a great day', '', 'awful traffic']")
    assert heavy == []
    assert np.allclose(np.sum(probabilities, axis=1), 1, atol=1e-6)  # an empty text is a zero bag, still served


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("lelp: error:")]
    assert len(lines) == 1 and lines[0].endswith("."), stderr[-2000:]
    return lines[0]


def test_a_checkpoint_of_another_config_is_one_sentence(bag, tmp_path):
    checkpoint = torch.load(bag.ckpt, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["student.embedding.weight"] = torch.zeros(16384, 32)  # a run with embed_dim 32
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    ran = run_main("export", "--config", str(bag.config), "--ckpt_path", str(other), "--output", str(tmp_path / "s"))
    assert ran.returncode == 2
    line = one_error_line(ran.stderr)
    assert "holds another student than" in line and "embedding.weight is [16384, 32] there but [16384, 64]" in line
    checkpoint["hyper_parameters"]["num_subclasses"] = 2  # a run with S = 2
    torch.save(checkpoint, other)
    ran = run_main("export", "--config", str(bag.config), "--ckpt_path", str(other), "--output", str(tmp_path / "s"))
    assert ran.returncode == 2 and "C·S = 2·2 = 4 outputs but this run needs" in one_error_line(ran.stderr)
    ran = run_main("export", "--config", str(bag.config), "--ckpt_path", str(tmp_path / "none.ckpt"),
                   "--output", str(tmp_path / "s"))
    assert ran.returncode == 2 and "is not a file" in one_error_line(ran.stderr)
    ran = run_main("export", "--config", str(bag.config), "--ckpt_path", str(bag.ckpt), "--output", str(tmp_path / "s"),
                   "--quantize", "int4")
    assert ran.returncode == 2 and "--quantize: invalid choice: 'int4'" in one_error_line(ran.stderr)
    assert not (tmp_path / "s").exists()


# -- lelp serve --------------------------------------------------------------------------------------------------

def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(bag, tmp_path_factory):
    """`lelp serve` on the bag export, in its own process group (Ctrl-C reaches the group), stderr in a file."""
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with serving(bag.folder, log, "--max_texts", "8") as (proc, port):
        yield proc, f"http://127.0.0.1:{port}/predict", log


def test_server_answers_single_and_concurrent_requests_like_the_predictor(server, bag):
    from lelp_lightning.serving import Predictor

    _, url, _ = server
    predictor = Predictor.load(bag.folder)
    texts = ["I love this so much", "worst day ever", "meh", "going to the beach tomorrow"]
    status, answer = post(url, json.dumps({"texts": texts[:1]}).encode())
    assert status == 200 and len(answer["predictions"]) == 1
    bodies = [json.dumps({"texts": texts[: 1 + i % 4]}).encode() for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: post(url, body), bodies))
    expected = predictor.predict_proba(texts)
    for (status, answer), body in zip(answers, bodies, strict=True):
        sent = json.loads(body)["texts"]
        assert status == 200 and len(answer["predictions"]) == len(sent)
        for i, prediction in enumerate(answer["predictions"]):
            probabilities = [prediction["probabilities"][name] for name in predictor.labels]
            np.testing.assert_allclose(probabilities, expected[i], atol=1e-6)
            assert prediction["label"] == predictor.labels[int(expected[i].argmax())]


@pytest.mark.parametrize(("body", "status", "words"), [
    (b'{"texts": ["no end"', 400, "not valid JSON"),
    (b'{"text": ["hello"]}', 422, 'the one field "texts"'),
    (b'["hello"]', 422, 'the one field "texts"'),
    (b'{"texts": []}', 422, "non-empty list"),
    (b'{"texts": ["fine", "  "]}', 422, "texts[1] is empty"),
    (b'{"texts": ["fine", 3]}', 422, "texts[1] is int"),
    (json.dumps({"texts": ["x"] * 9}).encode(), 413, "at most 8 per request"),
])
def test_server_refuses_a_malformed_request_with_one_sentence(server, body, status, words):
    proc, url, _ = server
    got, answer = post(url, body)
    assert (got, proc.poll()) == (status, None)
    assert words in answer["detail"] and answer["detail"].endswith(".")
    assert post(url, b'{"texts": ["still up"]}')[0] == 200


def test_server_stops_cleanly_on_ctrl_c(server):
    proc, url, log = server
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    stderr = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    with pytest.raises(OSError, match="Connection refused"):  # nothing listens on the port any more
        urllib.request.urlopen(url.replace("/predict", "/health"), timeout=2)
