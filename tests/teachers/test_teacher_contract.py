"""The teacher contract: every registered teacher, built tiny here, has a stable fingerprint, and its encode on a few
real rows gives finite float32 embeddings [n, D] and logits [n, C] that its final linear layer (W [C, D], b [C])
maps one to the other; its short name resolves in a config as ``class_path: <name>``."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TINY_BERT, save_tiny_bert, tiny_tweets

from lelp_lightning.cache import TeacherCache
from lelp_lightning.registry import resolve_short_names
from lelp_lightning.sources import Digits
from lelp_lightning.teachers import (
    CNNTeacher,
    FileTeacher,
    FineTunedClassifierTeacher,
    HFSequenceClassifierTeacher,
    PromptedLMTeacher,
    SentenceEncoderTeacher,
    Teacher,
    teachers,
)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with MiniLM's tokenizer, as a local model folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def build(name: str, tiny_bert: str, cache: TeacherCache):
    """The registered teacher ``name`` built tiny and fitted on small real data; (teacher, a few raw rows, C)."""
    tweets, digits = tiny_tweets(), Digits(train_size=200, val_size=50)
    texts = tweets.split("test").texts[:5] + ["", "☃ ünïcödé"]
    if name == "sentence_encoder":
        teacher, source = SentenceEncoderTeacher(tiny_bert, max_length=16, head_hidden=8, head_epochs=2), tweets
    elif name == "hf_classifier":
        teacher, source = HFSequenceClassifierTeacher(config={"model_type": "bert", **TINY_BERT, "num_labels": 2},
                                                      tokenizer=tiny_bert, max_length=16), None
    elif name == "finetuned":
        teacher, source = FineTunedClassifierTeacher(tiny_bert, epochs=1, train_batch_size=32, max_length=16), tweets
    elif name == "prompted_lm":  # a tiny random GPT-2 with MiniLM's tokenizer: ' negative', ' positive' one token each
        from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

        folder = cache.root / "tiny-gpt2"
        GPT2LMHeadModel(GPT2Config(vocab_size=30522, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
        teacher, source = PromptedLMTeacher(str(folder), template="{text}\nSentiment:", max_length=16,
                                            verbalizers={"negative": " negative", "positive": " positive"}), tweets
    elif name == "file":  # outputs of a random linear teacher on every tweet and the two extra texts, in an NPZ
        rows = [tweets.split(s) for s in ("train", "val", "test")]
        ids = np.concatenate([r.row_ids for r in rows] + [[-1, -2]])
        rng = np.random.default_rng(0)
        embedding, W, b = rng.normal(size=(len(ids), 8)), rng.normal(size=(2, 8)), rng.normal(size=2)
        np.savez(cache.root / "teacher.npz", row_id=ids, text=np.array(sum((r.texts for r in rows), []) + texts[5:]),
                 embedding=embedding.astype(np.float32), logits=(embedding @ W.T + b).astype(np.float32), W=W, b=b)
        teacher, source = FileTeacher(str(cache.root / "teacher.npz")), tweets
    elif name == "cnn":
        teacher, source = CNNTeacher(channels=(4,), hidden=8, epochs=1), digits
        texts = digits.split("test").texts[:7]
    else:
        pytest.fail(f"the teacher {name!r} is registered but not in the teacher contract: add a tiny build of it here")
    if source is not None:
        teacher.fit(source, cache)
    return teacher, texts, 2


@pytest.mark.parametrize("name", teachers.names())
def test_every_teacher_has_a_fingerprint_and_encodes_embeddings_its_final_layer_maps_to_its_logits(
        name, tiny_bert, tmp_path):
    teacher, rows, num_classes = build(name, tiny_bert, TeacherCache(tmp_path))
    assert isinstance(teacher, Teacher) and teachers.get(name) is type(teacher)
    fingerprint = teacher.fingerprint()
    assert isinstance(fingerprint, str) and fingerprint and teacher.fingerprint() == fingerprint
    embedding, logits = teacher.encode(rows)
    W, b = teacher.classifier()
    n, D = embedding.shape
    assert n == len(rows) and logits.shape == (n, num_classes)
    assert W.shape == (num_classes, D) and b.shape == (num_classes,)
    assert embedding.dtype == logits.dtype == np.float32
    assert np.isfinite(embedding).all() and np.isfinite(logits).all()
    np.testing.assert_allclose(embedding @ W.T + b, logits, rtol=1e-4, atol=1e-4)
    again_embedding, again_logits = teacher.encode(rows[:3])  # a row's outputs do not depend on its batch
    np.testing.assert_allclose(again_logits, logits[:3], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", teachers.names())
def test_a_teacher_short_name_resolves_in_a_config_to_its_class(name):
    from jsonargparse import ArgumentParser

    resolve_short_names()
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--teacher", type=Teacher)
    config = parser.parse_object({"teacher": {"class_path": name}})
    cls = teachers.get(name)
    assert config.teacher.class_path == f"{cls.__module__}.{cls.__qualname__}"


def test_the_library_teachers_are_registered_under_short_names():
    assert {"sentence_encoder", "hf_classifier", "finetuned", "cnn", "file"} <= set(teachers.names())
