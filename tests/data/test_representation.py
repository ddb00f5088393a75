"""Strategies read a named teacher representation: its cache entry, its probe, and what a strategy fits on it."""

import json

import numpy as np
import pytest
import torch
from helpers import run_main, tiny_run_args, tiny_teacher, tiny_tweets

from lelp_lightning.cache import CachePlan, TeacherCache
from lelp_lightning.data.representation import least_squares_probe
from lelp_lightning.errors import LelpError
from lelp_lightning.sources import Digits
from lelp_lightning.strategies import KMeansStrategy, LinearProjectionStrategy
from lelp_lightning.teachers import CNNTeacher, HFSequenceClassifierTeacher


def with_intercept(x):
    return np.hstack([np.asarray(x, np.float64), np.ones((len(x), 1))])


@pytest.mark.parametrize("duplicate_column", [False, True])
def test_least_squares_probe_equals_numpy_lstsq_in_chunks_and_when_rank_deficient(duplicate_column):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)).astype(np.float32)
    if duplicate_column:
        x[:, 5] = x[:, 4]
    targets = rng.normal(size=(500, 3)).astype(np.float32)
    W, b = least_squares_probe(x, targets, chunk=64)
    theta = np.linalg.lstsq(with_intercept(x), targets.astype(np.float64), rcond=None)[0]  # the minimum-norm one
    np.testing.assert_allclose(W, theta[:12].T, atol=1e-4)
    np.testing.assert_allclose(b, theta[12], atol=1e-4)


def lelp_z_by_numpy(x, labels, W, S, apply_to):
    """LELP without rotation, absolute z, fitted on (x, labels) and applied to ``apply_to``: per class, the top-S
    eigenvectors V_c of the null-space-projected class covariance, z = (P h − P μ_c) · V_c. An eigenvector's
    sign is arbitrary: compare |z|."""
    u, sv, _ = np.linalg.svd(W.T.astype(np.float64), full_matrices=False)
    Q = u[:, sv > sv.max() * max(W.shape) * np.finfo(np.float64).eps]
    P = np.eye(x.shape[1]) - Q @ Q.T
    x = x.astype(np.float64)
    z = np.zeros((len(apply_to), 2, S))
    for c in range(2):
        rows = x[labels == c]
        mu = rows.mean(0)
        cov = P @ np.cov(rows - mu, rowvar=False, bias=True) @ P
        vals, vecs = np.linalg.eigh(cov)
        V = vecs[:, np.argsort(vals)[::-1][:S]]
        z[:, c] = (apply_to.astype(np.float64) - mu) @ P @ V
    return np.abs(z)


def test_lelp_on_the_encoder_output_equals_a_numpy_reference_with_the_least_squares_probe(tweets_datamodule):
    dm = tweets_datamodule(LinearProjectionStrategy(num_subclasses=3, rotation="none", z_scale="absolute"),
                           representation="encoder")
    inputs = dm.strategy_inputs
    encoder = tiny_teacher().encoder
    texts = tiny_tweets().split("train").texts
    # the cache round trip: the entry holds the encoder's output of the split's rows, in their order
    np.testing.assert_allclose(inputs.embeddings["train"][:16], encoder.embed(texts[:16]), atol=2e-5)
    assert inputs.embeddings["train"].shape == (len(texts), encoder.embedding_dim)
    train = dm.split_cache("train")
    theta = np.linalg.lstsq(with_intercept(inputs.embeddings["train"]), np.asarray(train.logits, np.float64),
                            rcond=None)[0]
    np.testing.assert_allclose(inputs.W, theta[:-1].T, atol=1e-4)
    np.testing.assert_allclose(inputs.b, theta[-1], atol=1e-4)
    x, labels = np.asarray(inputs.embeddings["train"]), np.asarray(train.label)
    for split in ("train", "test"):  # fitted on the training rows, applied to every split
        expected = lelp_z_by_numpy(x, labels, inputs.W, 3, np.asarray(inputs.embeddings[split]))
        np.testing.assert_allclose(np.abs(dm.targets.z(split)), expected, atol=1e-4)


def test_the_representation_changes_the_strategy_inputs_fingerprint_and_the_z(tweets_datamodule):
    final = tweets_datamodule(KMeansStrategy(num_subclasses=2, seed=0))
    encoder = tweets_datamodule(KMeansStrategy(num_subclasses=2, seed=0), representation="encoder")
    off = tweets_datamodule(KMeansStrategy(num_subclasses=2, seed=0), representation="encoder", probe="none")
    prints = {dm.strategy_inputs.fingerprint for dm in (final, encoder, off)}
    assert len(prints) == 3
    assert final.strategy_inputs.embeddings["train"].shape[1] == 32  # the head's hidden layer
    assert encoder.strategy_inputs.embeddings["train"].shape[1] == 384  # MiniLM's output
    assert not off.strategy_inputs.W.any() and not off.strategy_inputs.b.any()
    assert not np.array_equal(final.targets.z("train"), encoder.targets.z("train"))
    plan = final.plan
    assert plan.representation_key("final", "train") == plan.key("train")
    assert plan.representation_key("encoder", "train") == tiny_teacher().encoder.feature_key(tiny_tweets(), "train")


def test_an_unknown_representation_is_refused_before_the_teacher_runs(tmp_path):
    from lelp_lightning.data.datamodule import DistillDataModule

    dm = DistillDataModule(tiny_tweets(), tiny_teacher(), KMeansStrategy(num_subclasses=2), cache_dir=str(tmp_path),
                           progress=False, representation="pooler")
    with pytest.raises(LelpError, match="has no representation 'pooler'; expected one of: final, encoder"):
        dm.prepare_data()
    assert not any(tmp_path.iterdir())
    with pytest.raises(LelpError, match="probe must be one of"):
        DistillDataModule(tiny_tweets(), tiny_teacher(), KMeansStrategy(), probe="ridge")


def test_lelp_fit_with_the_encoder_representation_records_it_and_the_checkpoint_refuses_another(tweets_cache_dir,
                                                                                             tmp_path):
    args = tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy", "kmeans", "--data.strategy.num_subclasses",
                         "2", "--data.representation", "encoder", "--trainer.max_epochs", "1", wandb=False)
    proc = run_main("fit", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["config"]["data"]["representation"] == "encoder"
    assert "'encoder' representation" in proc.stderr
    ckpt = next(tmp_path.rglob("last.ckpt"))
    resumed = run_main("fit", *[a if a != "encoder" else "final" for a in args], "--ckpt_path", str(ckpt),
                       "--trainer.max_epochs", "2")
    assert resumed.returncode != 0 and "fitted on other teacher outputs" in resumed.stderr


HF_CONFIG = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 2}


@pytest.mark.parametrize("layer", [0, -1])
def test_hf_hidden_representation_averages_each_texts_own_tokens(layer):
    teacher = HFSequenceClassifierTeacher(config=HF_CONFIG, tokenizer="all-MiniLM-L6-v2", max_length=16,
                                          representation_layer=layer, seed=1)
    texts = ["short", "a much longer sentence with many more tokens in it", "mid length text"]
    batched = teacher.hidden_mean(texts)
    alone = np.concatenate([teacher.hidden_mean([t]) for t in texts])  # no padding: a plain mean over tokens
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    net = teacher._load()
    tokens = teacher._tok(["short"], return_tensors="pt")
    with torch.inference_mode():
        states = net(**tokens, output_hidden_states=True).hidden_states[layer]
    np.testing.assert_allclose(alone[0], states[0].mean(0).numpy(), atol=1e-5)
    assert set(teacher.representations()) == {"hidden"}
    other = HFSequenceClassifierTeacher(config=HF_CONFIG, tokenizer="all-MiniLM-L6-v2", max_length=16,
                                        representation_layer=1, seed=1)
    assert other.fingerprint() == teacher.fingerprint()  # the teacher's outputs do not change ...
    assert other.representation_key("hidden", None, "train", "k") != teacher.representation_key("hidden", None,
                                                                                                   "train", "k")
    with pytest.raises(LelpError, match="representation_layer 7 is out of range"):
        HFSequenceClassifierTeacher(config=HF_CONFIG, tokenizer="all-MiniLM-L6-v2", representation_layer=7,
                                    seed=1).hidden_mean(texts)


def test_cnn_conv_representations_are_the_hidden_layers_input_and_its_channel_means(tmp_path):
    source = Digits()
    teacher = CNNTeacher(channels=[4, 8], hidden=16, epochs=1, seed=0)
    cache = TeacherCache(tmp_path)
    plan = CachePlan(cache, teacher, source)
    plan.build(progress=False)
    entries = plan.open()
    for name in ("conv", "conv_pooled"):
        plan.build_representation(name, progress=False)
    conv = plan.open_representation("conv", entries)["test"].embedding
    pooled = plan.open_representation("conv_pooled", entries)["test"].embedding
    net = teacher._net
    fc = net.features[-2]
    hidden = torch.relu(fc(torch.from_numpy(np.array(conv)))).detach().numpy()
    np.testing.assert_allclose(hidden, entries["test"].embedding, atol=1e-4)  # what the hidden FC layer reads
    np.testing.assert_allclose(pooled, np.array(conv).reshape(len(conv), 8, -1).mean(-1), atol=1e-5)
    assert plan.representation_key("conv", "test") != plan.representation_key("conv_pooled", "test")
