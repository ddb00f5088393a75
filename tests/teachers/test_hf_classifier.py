"""The Hugging Face classifier teacher: its embedding is the input of its final linear layer; seeded init."""

import numpy as np

from lelp_lightning.teachers import HFSequenceClassifierTeacher

TEXTS = ["a short one", "this is a somewhat longer sentence about movies and their plots", "", "☃ ünïcödé"]


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
