"""Student featurisers: raw text to what a student reads, with one vectorised gather per batch."""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import HashingVectorizer

from lelp_lightning import fileio
from lelp_lightning.cache import cache_key
from lelp_lightning.core import SPLITS
from lelp_lightning.errors import LelpError


class StudentInputs(ABC):
    """All rows of one split, ready for student batches."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def gather(self, index: np.ndarray):
        """The batch for the rows ``index`` (one vectorised gather)."""


class BagInputs(StudentInputs):
    """Rows as sparse bags of hashed n-gram ids, weighted so that ``EmbeddingBag(mode='sum')`` means the bag.

    The ids (int64) and per-row normalised weights are laid out once, so a batch is a handful of numpy
    operations: row lengths, the positions of their entries, two fancy-index gathers.
    """

    def __init__(self, matrix: sp.csr_matrix):
        self.matrix = matrix.tocsr()
        self.indptr = self.matrix.indptr.astype(np.int64)
        self.ids = self.matrix.indices.astype(np.int64)
        counts = np.diff(self.indptr)
        totals = np.add.reduceat(self.matrix.data, self.indptr[:-1][counts > 0]) if self.ids.size else np.zeros(0)
        row_total = np.ones(len(counts), np.float64)
        row_total[counts > 0] = totals
        self.weights = (self.matrix.data / np.repeat(row_total, counts)).astype(np.float32)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def gather(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        starts = self.indptr[index]
        counts = self.indptr[index + 1] - starts
        offsets = np.cumsum(counts) - counts
        positions = np.arange(int(counts.sum())) + np.repeat(starts - offsets, counts)
        return {
            "ids": torch.from_numpy(self.ids[positions]),
            "offsets": torch.from_numpy(offsets),
            "weights": torch.from_numpy(self.weights[positions]),
        }


class DenseInputs(StudentInputs):
    """Rows as a dense float matrix (features of a smaller encoder, pixels, ...)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return self.array.shape[0]

    def gather(self, index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[index], dtype=np.float32))


class RowsOf(StudentInputs):
    """The rows ``rows`` of another split's student inputs (no copy: a batch gathers through the positions)."""

    def __init__(self, inputs: StudentInputs, rows: np.ndarray):
        self.inputs, self.rows = inputs, np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray | None:
        """The rows' lengths where the inputs know them (length-bucketed batches)."""
        lengths = getattr(self.inputs, "lengths", None)
        return None if lengths is None else lengths[self.rows]

    def gather(self, index: np.ndarray):
        return self.inputs.gather(self.rows[index])


@dataclass
class ExportSpec:
    """What ``lelp export`` needs from a featuriser to put it in front of a student's ONNX graph.

    ``config`` is written as ``featurizer.json``: its ``"kind"`` names the predictor-side input builder
    (:class:`lelp_lightning.serving.predictor.InputBuilder`) that rebuilds the graph's inputs from raw rows, and its
    ``"inputs"`` the graph's input names, in order. ``feeds`` is what the student receives inside the graph:
    ``"dense"`` features [N, ...] (``features`` maps the graph's inputs to them, an encoder in the graph; ``None``:
    the one input is the features) or a padded hashed ``"bag"`` (ids, weights [N, L]). ``files``: what the folder
    needs besides (name → source path, e.g. a ``tokenizer.json``). The example inputs the graph is traced with are
    the input builder's own, on two of the test split's raw rows, so the graph sees what serving feeds it.
    """

    config: dict
    dynamic_axes: dict[str, dict[int, str]]
    feeds: str = "dense"
    features: torch.nn.Module | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def inputs(self) -> list[str]:
        return self.config["inputs"]


class Featurizer(ABC):
    """Turns a split's texts into :class:`StudentInputs`; ``input_dim`` sizes the student's first layer.

    ``kind`` names the predictor-side input builder of its exports (``featurizer.json``'s ``"kind"``);
    :meth:`export_spec` describes the graph's inputs. A featuriser without them trains but does not export.
    """

    kind: str | None = None

    @property
    @abstractmethod
    def input_dim(self) -> int: ...

    @abstractmethod
    def transform(self, texts: list[str]) -> StudentInputs: ...

    def use_cache(self, cache) -> None:
        """Told by the data module, when it is built, where its cache is: for a featuriser whose ``input_dim`` or
        export comes from what it builds there (a distilled token table), before anything reads them; default:
        nothing (``prepare`` and ``featurize`` receive the cache)."""

    def prepare(self, source, cache) -> None:
        """Build what this featuriser keeps in the data module's ``cache`` (once, in one process); default: nothing."""

    def featurize(self, source, split: str, cache) -> StudentInputs:
        """The inputs of one split of ``source``, as the data module asks for them; default: ``transform`` its texts."""
        return self.transform(source.split(split).texts)

    def fingerprint(self) -> str:
        payload = json.dumps({"class": type(self).__qualname__, **vars(self)}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def export_spec(self) -> ExportSpec:
        """How ``lelp export`` feeds this featuriser's inputs to the student's graph; default: it cannot."""
        raise LelpError(f"the featuriser {type(self).__name__} has no export spec, so its students cannot be "
                        "exported; give it a kind and an export_spec() "
                        "(see lelp_lightning.data.featurizers.ExportSpec).")


class HashedNgramFeaturizer(Featurizer):
    """fastText-style hashed word n-grams (scikit-learn's MurmurHash3 ``HashingVectorizer``): no vocabulary.

    Empty texts become empty bags (the student sees a zero vector); any Unicode string is accepted.
    """

    kind = "hashed_ngrams"

    def __init__(self, num_buckets: int = 2**18, max_ngram: int = 2, lowercase: bool = True):
        if num_buckets < 2:
            raise ValueError(f"num_buckets must be at least 2, got {num_buckets}.")
        self.num_buckets = num_buckets
        self.max_ngram = max_ngram
        self.lowercase = lowercase

    @property
    def input_dim(self) -> int:
        return self.num_buckets

    def _vectorizer(self) -> HashingVectorizer:
        return HashingVectorizer(n_features=self.num_buckets, ngram_range=(1, self.max_ngram),
                                 lowercase=self.lowercase, alternate_sign=False, norm=None,
                                 token_pattern=r"(?u)\b\w+\b", dtype=np.float32)

    def export_spec(self) -> ExportSpec:
        """Padded (ids, weights) [N, L] into the graph; the hashing runs outside, in numpy (its steps spelled out)."""
        return ExportSpec(
            {"kind": self.kind, "num_buckets": self.num_buckets, "max_ngram": self.max_ngram,
             "lowercase": self.lowercase, "token_pattern": self._vectorizer().token_pattern,
             "hash": "MurmurHash3 x86 32-bit, seed 0, of each word n-gram's UTF-8 bytes; bucket = |h| mod "
                     "num_buckets (scikit-learn's HashingVectorizer with alternate_sign=False)",
             "weights": "per row, each bucket's count / the row's n-gram count (EmbeddingBag sum = mean)",
             "padding": "ids / weights are [N, L]: each row's entries, then bucket 0 at weight 0 to the batch's "
                        "longest row",
             "inputs": ["ids", "weights"]},
            {"ids": {0: "batch", 1: "entries"}, "weights": {0: "batch", 1: "entries"}}, feeds="bag")

    def transform(self, texts: list[str]) -> BagInputs:
        matrix = self._vectorizer().transform(texts)
        matrix.sort_indices()
        return BagInputs(matrix)

    def _bags_path(self, source, split: str, cache) -> Path:
        data = source.split(split)
        return cache.root / f"bags-{cache_key(self.fingerprint(), source.fingerprint(), data.fingerprint())}.npz"

    def prepare(self, source, cache) -> None:
        """Hash every split's texts once into ``cache`` beside the teacher's entries (``bags-<key>.npz``, keyed by
        this featuriser's, the source's and the split's fingerprints): reading them back costs a fraction of
        hashing again. Written atomically (:mod:`lelp_lightning.fileio`), so a half-written file is never read."""
        for split in SPLITS:
            path = self._bags_path(source, split, cache)
            if path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            bags = self.transform(source.split(split).texts).matrix
            fileio.atomic_write(path, functools.partial(sp.save_npz, matrix=bags, compressed=False))

    def featurize(self, source, split: str, cache) -> BagInputs:
        """A split's bags: read from ``cache`` when :meth:`prepare` wrote them, else hashed now."""
        path = self._bags_path(source, split, cache)
        if path.is_file():
            try:
                matrix = sp.load_npz(path)
                if matrix.shape == (len(source.split(split)), self.num_buckets):
                    return BagInputs(matrix)
            except (OSError, ValueError, KeyError):  # unreadable (written by other means): hashed again
                pass
        return self.transform(source.split(split).texts)
