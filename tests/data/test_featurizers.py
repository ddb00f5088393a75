"""Featurisers: hashed n-grams against scikit-learn and a hand computation; a smaller encoder's cached features."""

import numpy as np
import torch
from helpers import TINY_TEACHER, tiny_tweets
from sklearn.feature_extraction.text import HashingVectorizer

from lelp_lightning.data.featurizers import HashedNgramFeaturizer
from lelp_lightning.students import HashedBagStudent

TEXTS = ["the movie was good", "", "Good good GOOD movie!", "ünïcödé ☃ text \ufffd here"]


def test_bag_matches_sklearn_hashing_and_means_the_bag():
    feats = HashedNgramFeaturizer(num_buckets=1024, max_ngram=2)
    batch = feats.transform(TEXTS).gather(np.array([2, 0, 1]))
    ref = HashingVectorizer(n_features=1024, ngram_range=(1, 2), alternate_sign=False, norm=None,
                            token_pattern=r"(?u)\b\w+\b").transform([TEXTS[2], TEXTS[0], TEXTS[1]])
    offsets = batch["offsets"].tolist() + [len(batch["ids"])]
    for row in range(3):
        ids = batch["ids"][offsets[row]:offsets[row + 1]].numpy()
        w = batch["weights"][offsets[row]:offsets[row + 1]].numpy()
        dense = np.zeros(1024)
        dense[ids] = w
        counts = ref[row].toarray().ravel()
        expected = counts / counts.sum() if counts.sum() else counts
        np.testing.assert_allclose(dense, expected, rtol=1e-6)


def test_student_reads_the_mean_of_its_bag_embeddings():
    feats = HashedNgramFeaturizer(num_buckets=64, max_ngram=1)
    student = HashedBagStudent(input_dim=64, num_outputs=4, embed_dim=3)
    batch = feats.transform(["a a b", ""]).gather(np.array([0, 1]))
    bag = student.embedding(batch["ids"], batch["offsets"], per_sample_weights=batch["weights"])
    emb = student.embedding.weight.detach()
    vec = HashingVectorizer(n_features=64, alternate_sign=False, norm=None, token_pattern=r"(?u)\b\w+\b")
    a_id, b_id = vec.transform(["a"]).indices[0], vec.transform(["b"]).indices[0]
    assert batch["ids"].tolist() == sorted([a_id, b_id])  # unique ids, counts as weights
    torch.testing.assert_close(bag[0], (2 * emb[a_id] + emb[b_id]) / 3)
    torch.testing.assert_close(bag[1], torch.zeros(3))  # empty text → zero vector, documented


def test_encoder_features_come_from_the_cache_entry_a_teacher_of_the_same_encoder_wrote(tweets_cache_dir):
    """MiniLM features at the tiny teacher's max_length: its ``encoder-`` entries, read without running MiniLM."""
    from lelp_lightning.cache import TeacherCache
    from lelp_lightning.data.encoder_featurizer import SentenceEncoderFeaturizer

    feats = SentenceEncoderFeaturizer("all-MiniLM-L6-v2", max_length=TINY_TEACHER["max_length"])
    assert feats.input_dim == 384  # from the model's config.json
    before = sorted(p.name for p in tweets_cache_dir.iterdir())
    source = tiny_tweets()
    inputs = feats.featurize(source, "val", TeacherCache(tweets_cache_dir))
    assert feats.encoder._net is None  # neither input_dim nor the cached features loaded the model
    assert sorted(p.name for p in tweets_cache_dir.iterdir()) == before
    texts = source.split("val").texts
    batch = inputs.gather(np.array([3, 0, 7]))
    assert batch.dtype == torch.float32 and batch.shape == (3, 384) and len(inputs) == len(texts)
    expected = feats.encoder.embed([texts[3], texts[0], texts[7]])
    np.testing.assert_allclose(batch.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(feats.transform([texts[3], texts[0], texts[7]]).gather(np.arange(3)).numpy(), expected,
                               atol=1e-5)


def test_encoder_featurizer_fingerprint_is_stable_and_follows_the_options():
    from lelp_lightning.data.encoder_featurizer import SentenceEncoderFeaturizer

    a, b = SentenceEncoderFeaturizer(), SentenceEncoderFeaturizer(batch_size=8)
    assert a.fingerprint() == b.fingerprint()  # batch size does not change the features
    assert a.fingerprint() != SentenceEncoderFeaturizer(max_length=64).fingerprint()
    assert a.fingerprint() != SentenceEncoderFeaturizer(precision="bf16").fingerprint()
    assert HashedNgramFeaturizer().fingerprint() == HashedNgramFeaturizer().fingerprint()
