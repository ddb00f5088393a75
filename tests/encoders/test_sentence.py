"""The sentence encoders (MiniLM, MPNet from its part wheels) against sentence-transformers' encode."""

import numpy as np
import pytest

from lelp_lightning.encoders import SentenceEncoder, resolve_model_path

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
