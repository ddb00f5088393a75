"""Teachers: the real MiniLM encoder against sentence-transformers, and a Hugging Face classifier's embedding."""

import numpy as np
import pytest

from lelp_lightning.encoders import SentenceEncoder, resolve_model_path
from lelp_lightning.teachers import HFSequenceClassifierTeacher

TEXTS = ["a short one", "this is a somewhat longer sentence about movies and their plots", "", "☃ ünïcödé"]


def test_encoder_matches_sentence_transformers_encode():
    st = pytest.importorskip("sentence_transformers")
    ref_model = st.SentenceTransformer(str(resolve_model_path("all-MiniLM-L6-v2")), device="cpu")
    ref_model.max_seq_length = 32
    ref = ref_model.encode(TEXTS, batch_size=2, convert_to_numpy=True)
    enc = SentenceEncoder("all-MiniLM-L6-v2", max_length=32, batch_size=2)
    np.testing.assert_allclose(enc.embed_all(TEXTS), ref, atol=1e-5)


def test_mpnet_from_its_part_wheels_matches_sentence_transformers_encode():
    """all-mpnet-base-v2, extracted from its five wheels, embeds like sentence-transformers (mean pooling + L2)."""
    st = pytest.importorskip("sentence_transformers")
    path = resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    assert path == resolve_model_path("all-mpnet-base-v2") and (path / "model.safetensors").is_file()
    ref_model = st.SentenceTransformer(str(path), device="cpu")
    ref_model.max_seq_length = 32
    ref = ref_model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    enc = SentenceEncoder("all-mpnet-base-v2", max_length=32)
    out = enc.embed(TEXTS)
    assert enc.embedding_dim == 768 == out.shape[1]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_hf_classifier_embedding_is_the_input_of_its_final_linear_layer():
    teacher = HFSequenceClassifierTeacher(
        config={"model_type": "bert", "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 3},
        tokenizer="all-MiniLM-L6-v2", max_length=16, seed=1)
    emb, logits = teacher.encode(TEXTS)
    W, b = teacher.classifier()
    assert emb.shape == (4, 16) and logits.shape == (4, 3) and W.shape == (3, 16)
    np.testing.assert_allclose(emb @ W.T + b, logits, atol=1e-5)
    again = HFSequenceClassifierTeacher(config=teacher.config, tokenizer="all-MiniLM-L6-v2", max_length=16, seed=1)
    np.testing.assert_allclose(again.encode(TEXTS)[1], logits, atol=1e-6)  # seeded random init
    assert again.fingerprint() == teacher.fingerprint()
    other = HFSequenceClassifierTeacher(config=teacher.config, tokenizer="all-MiniLM-L6-v2", max_length=16, seed=2)
    assert other.fingerprint() != teacher.fingerprint()
