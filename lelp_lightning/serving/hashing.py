"""The hashed n-gram featuriser without scikit-learn or torch: the same tokens, the same MurmurHash3, the same bags.

:class:`~lelp_lightning.data.featurizers.HashedNgramFeaturizer` hashes with scikit-learn's ``HashingVectorizer``
(``alternate_sign=False``, ``norm=None``); a served student must see exactly those buckets, so this module redoes its
steps: lowercase, ``re.findall(token_pattern)``, word n-grams in scikit-learn's order, MurmurHash3 (x86, 32-bit,
seed 0) of each n-gram's UTF-8 bytes, bucket ``|h| mod num_buckets``, then per row the sorted buckets with
``count / row total`` as weights (what :class:`~lelp_lightning.data.featurizers.BagInputs` feeds ``EmbeddingBag``).
The hash runs vectorised over all n-grams of a batch with numpy's wrapping uint32 arithmetic.
"""

from __future__ import annotations

import re

import numpy as np

_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
_HASH_CHUNK = 8192  # n-grams hashed at once; sorted by length first, so a chunk pads to about its own length


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _hash_chunk(keys: list[bytes], seed: int) -> np.ndarray:
    lengths = np.fromiter(map(len, keys), np.int64, len(keys))
    width = int(-(-max(int(lengths.max()), 1) // 4) * 4)
    padded = np.zeros((len(keys), width), np.uint8)
    rows = np.repeat(np.arange(len(keys)), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    padded[rows, cols] = np.frombuffer(b"".join(keys), np.uint8)
    words = padded.view("<u4").astype(np.uint32)  # little-endian 4-byte blocks, zero padded
    full = lengths // 4
    h = np.full(len(keys), seed, np.uint32)
    for j in range(words.shape[1]):
        k = _rotl(words[:, j] * _C1, 15) * _C2
        block = full > j
        mixed = _rotl(h ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        tail = (full == j) & (lengths % 4 > 0)  # the 1-3 trailing bytes: the zero-padded block, not mixed further
        h = np.where(block, mixed, np.where(tail, h ^ k, h))
    h ^= lengths.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.view(np.int32)


def murmurhash3_32(keys: list[bytes], seed: int = 0) -> np.ndarray:
    """Signed 32-bit MurmurHash3 (x86) of each byte string, as ``sklearn.utils.murmurhash3_32(key, seed)``."""
    out = np.zeros(len(keys), np.int32)
    if not keys:
        return out
    order = sorted(range(len(keys)), key=lambda i: len(keys[i]))
    for lo in range(0, len(order), _HASH_CHUNK):
        index = order[lo: lo + _HASH_CHUNK]
        out[index] = _hash_chunk([keys[i] for i in index], seed)
    return out


class HashedNgrams:
    """Texts → (ids, offsets, weights), the inputs of a hashed-bag student, as the training featuriser made them."""

    def __init__(self, num_buckets: int, max_ngram: int, lowercase: bool, token_pattern: str):
        self.num_buckets, self.max_ngram, self.lowercase = int(num_buckets), int(max_ngram), bool(lowercase)
        self.token_pattern = re.compile(token_pattern)

    def ngrams(self, text: str) -> list[str]:
        """The word n-grams of ``text`` in scikit-learn's order: every unigram, then every bigram, ..."""
        tokens = self.token_pattern.findall(text.lower() if self.lowercase else text)
        grams = list(tokens)
        for n in range(2, min(self.max_ngram, len(tokens)) + 1):
            grams += [" ".join(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]
        return grams

    def buckets(self, grams: list[str]) -> np.ndarray:
        """Each n-gram's bucket: ``|h| mod num_buckets`` (h = −2³¹ maps as scikit-learn maps it)."""
        h = murmurhash3_32([g.encode("utf-8") for g in grams]).astype(np.int64)
        return np.where(h == -(2**31), 2**31 % self.num_buckets, np.abs(h) % self.num_buckets)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        grams = [self.ngrams(t) for t in texts]
        counts = np.fromiter(map(len, grams), np.int64, len(grams))
        row = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        bucket = self.buckets([g for row_grams in grams for g in row_grams])
        # one entry per (row, bucket) with its count, sorted by row then bucket (scikit-learn's sorted CSR)
        keys, count = np.unique(row * self.num_buckets + bucket, return_counts=True)
        rows, ids = keys // self.num_buckets, keys % self.num_buckets
        per_row = np.bincount(rows, minlength=len(texts))
        total = np.bincount(rows, weights=count, minlength=len(texts))
        offsets = np.cumsum(per_row) - per_row
        weights = (count.astype(np.float64) / total[rows]).astype(np.float32)
        return {"ids": ids.astype(np.int64), "offsets": offsets.astype(np.int64), "weights": weights}
