"""The hashed n-gram featuriser without scikit-learn or torch: the same tokens, the same MurmurHash3, the same bags.

:class:`~lelp_lightning.data.featurizers.HashedNgramFeaturizer` hashes with scikit-learn's ``HashingVectorizer``
(``alternate_sign=False``, ``norm=None``); a served student must see exactly those buckets, so this module redoes its
steps: lowercase, ``re.findall(token_pattern)``, word n-grams in scikit-learn's order, MurmurHash3 (x86, 32-bit,
seed 0) of each n-gram's UTF-8 bytes, bucket ``|h| mod num_buckets``, then per row the sorted buckets with
``count / row total`` as weights (what :class:`~lelp_lightning.data.featurizers.BagInputs` feeds ``EmbeddingBag``).
The hash runs vectorised over all n-grams of a batch with numpy's wrapping uint32 arithmetic, each n-gram a slice
of one buffer of the batch's tokens, so nothing runs per n-gram in Python.
"""

from __future__ import annotations

import re

import numpy as np

_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
_HASH_CHUNK = 8192  # n-grams hashed at once; sorted by length first, so a chunk pads to about its own length


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _hash_spans(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, seed: int) -> np.ndarray:
    """MurmurHash3 of the byte strings ``data[start: start + length]``, all at once; ``lengths`` ascending, so the
    strings that still have a 4-byte block ``j`` are a suffix of the rows, and each step works on that suffix only."""
    width = int(-(-max(int(lengths[-1]), 1) // 4) * 4)
    column = np.arange(width)
    inside = column < lengths[:, None]
    padded = np.where(inside, data[np.minimum(starts[:, None] + column, max(len(data) - 1, 0))], 0).astype(np.uint8)
    words = padded.view("<u4").astype(np.uint32)  # little-endian 4-byte blocks, zero padded
    full = lengths // 4
    h = np.full(len(starts), seed, np.uint32)
    for j in range(words.shape[1]):
        first_tail, first_full = np.searchsorted(full, j, "left"), np.searchsorted(full, j, "right")
        k = _rotl(words[first_tail:, j] * _C1, 15) * _C2
        # the 1-3 trailing bytes (the zero-padded block ``j`` of a string with ``j`` full blocks): xor, no mixing
        tail = slice(first_tail, first_full)
        h[tail] = np.where(lengths[tail] % 4 > 0, h[tail] ^ k[: first_full - first_tail], h[tail])
        h[first_full:] = _rotl(h[first_full:] ^ k[first_full - first_tail:], 13) * np.uint32(5) + np.uint32(0xE6546B64)
    h ^= lengths.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.view(np.int32)


def murmurhash_spans(data: bytes, starts: np.ndarray, lengths: np.ndarray, seed: int = 0) -> np.ndarray:
    """Signed 32-bit MurmurHash3 (x86) of each slice ``data[start: start + length]``; slices of similar length are
    hashed together, so a chunk pads to about its own length."""
    out = np.zeros(len(starts), np.int32)
    if not len(starts):
        return out
    buffer = np.frombuffer(data, np.uint8) if data else np.zeros(1, np.uint8)
    order = np.argsort(lengths, kind="stable")
    for lo in range(0, len(order), _HASH_CHUNK):
        index = order[lo: lo + _HASH_CHUNK]
        out[index] = _hash_spans(buffer, starts[index], lengths[index], seed)
    return out


def murmurhash3_32(keys: list[bytes], seed: int = 0) -> np.ndarray:
    """Signed 32-bit MurmurHash3 (x86) of each byte string, as ``sklearn.utils.murmurhash3_32(key, seed)``."""
    lengths = np.fromiter(map(len, keys), np.int64, len(keys))
    return murmurhash_spans(b"".join(keys), np.cumsum(lengths) - lengths, lengths, seed)


class HashedNgrams:
    """Texts → a hashed-bag student's inputs, as the training featuriser made them: :meth:`bags` gives
    ``EmbeddingBag``'s (ids, offsets, weights); calling it gives the exported graph's padded ``ids`` / ``weights``
    [N, L] (one entry per n-gram, not per bucket: the graph's weighted sum adds repeats, so no sort is needed)."""

    def __init__(self, num_buckets: int, max_ngram: int, lowercase: bool, token_pattern: str):
        self.num_buckets, self.max_ngram, self.lowercase = int(num_buckets), int(max_ngram), bool(lowercase)
        self.token_pattern = re.compile(token_pattern)

    def spans(self, texts: list[str]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every word n-gram of ``texts`` as a slice of one UTF-8 buffer (the rows' tokens joined by single spaces,
        so an n-gram is the bytes from its first token's start to its last token's end): (buffer, row, start,
        length, column), ``column`` numbering a row's n-grams from 0 (its unigrams, then its bigrams, …).
        scikit-learn joins an n-gram's tokens with one space too; the order of n-grams does not matter."""
        tokens = [self.token_pattern.findall(t.lower() if self.lowercase else t) for t in texts]
        flat = [token for row in tokens for token in row]
        joined = " ".join(flat)
        data = joined.encode("utf-8")
        sizes = np.fromiter(map(len, flat) if joined.isascii() else (len(t.encode("utf-8")) for t in flat),
                            np.int64, len(flat))
        token_start = np.cumsum(sizes + 1) - (sizes + 1)
        per_row = np.fromiter(map(len, tokens), np.int64, len(tokens))
        token_row = np.repeat(np.arange(len(texts), dtype=np.int64), per_row)
        # the token's index in its row
        position = np.arange(len(flat)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        row_length = per_row[token_row]  # its row's token count
        rows, starts, lengths, columns = [], [], [], []
        before = np.zeros(len(texts), np.int64)  # each row's n-grams of the smaller orders
        for n in range(1, self.max_ngram + 1):
            first = np.flatnonzero(position + n <= row_length)
            last = first + n - 1
            rows.append(token_row[first])
            starts.append(token_start[first])
            lengths.append(token_start[last] + sizes[last] - token_start[first])
            columns.append(before[token_row[first]] + position[first])
            before += np.maximum(per_row - n + 1, 0)
        return data, *(np.concatenate(a) for a in (rows, starts, lengths, columns))

    def buckets(self, data: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Each n-gram's bucket: ``|MurmurHash3| mod num_buckets``, as scikit-learn takes it."""
        h = murmurhash_spans(data, starts, lengths).astype(np.int64)
        return np.where(h == -(2**31), 2**31 % self.num_buckets, np.abs(h) % self.num_buckets)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The graph's padded ``ids`` / ``weights`` [N, L]: every n-gram of a row at weight 1 / the row's n-gram
        count (a bucket hit k times sums to k / count, the bag's weight, in the graph), then bucket 0 at weight 0."""
        data, row, starts, lengths, column = self.spans(texts)
        total = np.bincount(row, minlength=len(texts))
        shape = (len(texts), max(int(total.max(initial=0)), 1))
        ids, weights = np.zeros(shape, np.int64), np.zeros(shape, np.float32)
        ids[row, column] = self.buckets(data, starts, lengths)
        weights[row, column] = (1.0 / np.maximum(total, 1)).astype(np.float32)[row]
        return {"ids": ids, "weights": weights}

    def bags(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``EmbeddingBag``'s inputs for ``texts``: one entry per (row, bucket), sorted, weight = count / row total."""
        data, row, starts, lengths, _ = self.spans(texts)
        bucket = self.buckets(data, starts, lengths)
        # one entry per (row, bucket) with its count, sorted by row then bucket (scikit-learn's sorted CSR)
        keys, count = np.unique(row * self.num_buckets + bucket, return_counts=True)
        rows, ids = keys // self.num_buckets, keys % self.num_buckets
        per_row = np.bincount(rows, minlength=len(texts))
        total = np.bincount(rows, weights=count, minlength=len(texts))
        offsets = np.cumsum(per_row) - per_row
        weights = (count.astype(np.float64) / total[rows]).astype(np.float32)
        return {"ids": ids.astype(np.int64), "offsets": offsets.astype(np.int64), "weights": weights}
