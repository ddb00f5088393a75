"""The predictor's own MurmurHash3 and n-gram bags are bit-exact with scikit-learn's and the training featuriser's."""

import numpy as np
import pytest
from helpers import tiny_tweets
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils import murmurhash3_32 as sklearn_murmurhash

from lelp_lightning.data.featurizers import HashedNgramFeaturizer
from lelp_lightning.serving.hashing import HashedNgrams, murmurhash3_32


def test_murmurhash_equals_scikit_learn_on_every_length_and_byte():
    rng = np.random.default_rng(0)
    keys = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in range(0, 41) for _ in range(30)]
    keys += [b"", b"\xff" * 7, "日本語 😀".encode()]
    expected = [sklearn_murmurhash(k, seed=0) for k in keys]
    np.testing.assert_array_equal(murmurhash3_32(keys), np.asarray(expected, np.int32))
    assert murmurhash3_32([b"abc"], seed=7)[0] == sklearn_murmurhash(b"abc", seed=7)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=30), max_size=8))
def test_murmurhash_equals_scikit_learn_on_any_text(texts):
    keys = [t.encode("utf-8") for t in texts]
    np.testing.assert_array_equal(murmurhash3_32(keys), [sklearn_murmurhash(k, seed=0) for k in keys])


@pytest.mark.parametrize(("num_buckets", "max_ngram", "lowercase"), [(2**18, 2, True), (1000, 3, False), (7, 1, True)])
def test_bags_equal_the_training_featuriser_on_real_tweets(num_buckets, max_ngram, lowercase):
    source = tiny_tweets()
    texts = [t for split in ("train", "val", "test") for t in source.split(split).texts]
    texts += ["", "   ", "!!!", "Ünïcode ÀÉ 日本語 😀 text", "a", "A a A a", "x " * 300]
    featurizer = HashedNgramFeaturizer(num_buckets=num_buckets, max_ngram=max_ngram, lowercase=lowercase)
    expected = featurizer.transform(texts).gather(np.arange(len(texts)))
    hashed = HashedNgrams(num_buckets, max_ngram, lowercase, featurizer._vectorizer().token_pattern)
    got = hashed.bags(texts)
    for key in ("ids", "offsets", "weights"):
        assert got[key].dtype == expected[key].numpy().dtype
        np.testing.assert_array_equal(got[key], expected[key].numpy())
    # the padded form the graph reads: one entry per n-gram at weight 1 / the row's n-gram count, padding at weight
    # 0; summed per (row, bucket), as the graph's weighted sum does, it is the bag (count / total) exactly
    padded = hashed(texts)
    dense = np.zeros((len(texts), num_buckets))
    np.add.at(dense, (np.repeat(np.arange(len(texts)), padded["ids"].shape[1]), padded["ids"].ravel()),
              padded["weights"].ravel().astype(np.float64))
    reference = np.zeros((len(texts), num_buckets))
    rows = np.repeat(np.arange(len(texts)), np.diff(np.append(got["offsets"], len(got["ids"]))))
    reference[rows, got["ids"]] = got["weights"]
    np.testing.assert_allclose(dense, reference, rtol=1e-6, atol=1e-7)
    ngrams = np.asarray(featurizer._vectorizer().transform(texts).sum(1)).ravel()  # scikit-learn's n-gram counts
    np.testing.assert_array_equal((padded["weights"] > 0).sum(1), ngrams)
    assert padded["ids"].shape == padded["weights"].shape == (len(texts), max(int(ngrams.max()), 1))
