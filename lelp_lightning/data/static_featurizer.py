"""Token bags over a static token table distilled from an encoder (model2vec): the static-embedding student's input.

``model2vec.distill`` runs the encoder over each token of its vocabulary alone, PCA-reduces the outputs and bakes a
Zipf/SIF weight into each row; the result is a table [V, D] and a tokenizer. This featuriser distils once per
encoder and options into the data module's cache (``static-<key>/``, built in a temporary sibling folder, sealed by
``distilled.json`` and renamed into place under a file lock, so concurrent processes distil once and a half-built
folder is never read), then turns each split into bags of token ids once (``static-tokens-<key>.npz``).
A bag is model2vec's ``StaticModel.encode`` tokenisation: the text cut to ``max_length`` × the median token length
in characters, tokenised without special tokens and truncated to ``max_length`` tokens, unknown tokens dropped,
each kept token at weight 1 / the row's count, so ``EmbeddingBag(mode="sum")`` over the table is ``encode``'s mean.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from lelp_lightning import fileio
from lelp_lightning.cache import TeacherCache, cache_key
from lelp_lightning.core import SPLITS, fingerprint_of
from lelp_lightning.data.featurizers import BagInputs, ExportSpec, Featurizer
from lelp_lightning.encoders import SentenceEncoder
from lelp_lightning.encoders.sentence import resolve_model_path
from lelp_lightning.errors import LelpError
from lelp_lightning.extras import require

POOLINGS = ("mean", "first", "last", "pooler")  # model2vec 0.10's PoolingMode: how a token's own output is read
log = logging.getLogger(__name__)
MARKER = "distilled.json"  # written last into a distilled folder: a folder without it is not complete


class TokenBagInputs(BagInputs):
    """Rows as bags of token ids with their pooling weights laid out flat (``indptr`` [N+1], ``ids``, ``weights``);
    batches are :class:`BagInputs`' gathers."""

    def __init__(self, indptr: np.ndarray, ids: np.ndarray, weights: np.ndarray):
        self.indptr = indptr.astype(np.int64)
        self.ids = ids.astype(np.int64)
        self.weights = weights.astype(np.float32)

    def __len__(self) -> int:
        return len(self.indptr) - 1


def mean_bags(token_ids: list[list[int]]) -> TokenBagInputs:
    """Each row's tokens at weight 1 / its token count (an empty row is an empty bag: a zero vector)."""
    counts = np.fromiter(map(len, token_ids), np.int64, len(token_ids))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    ids = np.fromiter((i for row in token_ids for i in row), np.int64, int(indptr[-1]))
    weights = np.repeat(1.0 / np.maximum(counts, 1), counts).astype(np.float32)
    return TokenBagInputs(indptr, ids, weights)


class StaticTokenFeaturizer(Featurizer):
    """Token bags over a table model2vec distils from ``encoder`` (a local Hugging Face encoder folder or a bundled
    name): ``pca_dims`` (None: the encoder's width), ``sif_coefficient`` (None: no Zipf/SIF weighting),
    ``token_remove_pattern`` (tokens left out of the vocabulary; model2vec's default drops BERT's ``[unusedN]``),
    ``pooling`` (how the encoder's output for one token becomes its row: mean, first, last, pooler) are
    ``model2vec.distill``'s options; ``max_length``: tokens per text (None: all), as model2vec's ``encode``.

    ``input_dim`` is the table's vocabulary size; reading it distils on first use (the data module tells this
    featuriser its cache when it is built), later reads take the size from the distilled folder's marker."""

    kind = "static_tokens"

    def __init__(self, encoder: str = "all-MiniLM-L6-v2", pca_dims: int | None = 256,
                 sif_coefficient: float | None = 1e-4, max_length: int | None = 512,
                 token_remove_pattern: str | None = r"\[unused\d+\]", pooling: str = "mean"):
        if pca_dims is not None and pca_dims < 1:
            raise LelpError(f"StaticTokenFeaturizer's pca_dims must be >= 1 or null (no PCA), got {pca_dims}.")
        if sif_coefficient is not None and not 0 < sif_coefficient < 1:
            raise LelpError(f"StaticTokenFeaturizer's sif_coefficient must be in (0, 1) or null (no Zipf/SIF "
                            f"weighting), got {sif_coefficient}.")
        if max_length is not None and max_length < 1:
            raise LelpError(f"StaticTokenFeaturizer's max_length must be >= 1 or null (no truncation), "
                            f"got {max_length}.")
        if pooling not in POOLINGS:
            raise LelpError(f"StaticTokenFeaturizer's pooling is {pooling!r}; expected one of {list(POOLINGS)}.")
        if token_remove_pattern is not None:
            try:
                re.compile(token_remove_pattern)
            except re.error as err:
                raise LelpError(f"StaticTokenFeaturizer's token_remove_pattern {token_remove_pattern!r} is not a "
                                f"regular expression ({err}).") from None
        resolve_model_path(encoder)  # a folder that does not exist is one sentence now, not after the teacher pass
        self.encoder, self.pca_dims, self.sif_coefficient = encoder, pca_dims, sif_coefficient
        self.max_length, self.token_remove_pattern, self.pooling = max_length, token_remove_pattern, pooling
        self._cache: TeacherCache | None = None

    # -- the distilled table ----------------------------------------------------------------------------------

    def use_cache(self, cache: TeacherCache) -> None:
        self._cache = cache

    @functools.cached_property
    def table_key(self) -> str:
        """The distilled folder's key: the encoder's fingerprint (name, weight files), model2vec's version and the
        distillation options."""
        require("model2vec", "static", "the static-embedding student")
        from model2vec.version import __version__

        return "static-" + cache_key(fingerprint_of("StaticTokenTable", {
            "encoder": SentenceEncoder(self.encoder).fingerprint(), "model2vec": __version__,
            "pca_dims": self.pca_dims, "sif_coefficient": self.sif_coefficient,
            "token_remove_pattern": self.token_remove_pattern, "pooling": self.pooling}))

    @property
    def folder(self) -> Path:
        """The distilled folder in the cache (distilled now if it is not there yet)."""
        if self._cache is None:
            raise LelpError("StaticTokenFeaturizer needs the cache its table is distilled into; use it through a "
                            "DistillDataModule, or call use_cache(TeacherCache(<folder>)) first.")
        folder = self._cache.root / self.table_key
        if not (folder / MARKER).is_file():
            self._distil(folder)
        return folder

    def _distil(self, folder: Path) -> None:
        """Distil into a temporary sibling, seal it with its marker and rename it into place, under the cache's
        lock of this key: a second process waits, then finds the folder done; a killed build's temporary folder
        is removed by the next build (only the lock's holder builds, so no live build owns one)."""
        require("model2vec", "static", "the static-embedding student")
        require("skeletoken", "static", "the static-embedding student")
        with self._cache.lock(self.table_key, f"the static token table of {self.encoder}"):
            if (folder / MARKER).is_file():
                return
            for stale in folder.parent.glob(f".{folder.name}.tmp*"):
                shutil.rmtree(stale, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)  # a folder without its marker is not a table
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from model2vec.distill import distill

            log.info("distilling the static token table of %s with model2vec into %s", self.encoder, folder)

            model = distill(model_name=str(resolve_model_path(self.encoder)), pca_dims=self.pca_dims,
                            sif_coefficient=self.sif_coefficient, token_remove_pattern=self.token_remove_pattern,
                            quantize_to="float32", pooling=self.pooling)
            staging = fileio.temporary_name(folder)
            model.save_pretrained(staging)
            fileio.atomic_write_json(staging / MARKER, {
                "encoder": self.encoder, "rows": int(model.embedding.shape[0]), "dim": int(model.embedding.shape[1]),
                "median_token_length": int(model.median_token_length), "unk_id": model.unk_token_id,
                "options": {"pca_dims": self.pca_dims, "sif_coefficient": self.sif_coefficient,
                            "token_remove_pattern": self.token_remove_pattern, "pooling": self.pooling}})
            os.replace(staging, folder)  # the folder appears complete or not at all

    @functools.cached_property
    def table_info(self) -> dict:
        """The distilled folder's marker: rows, dim, median token length, unknown token id."""
        return json.loads((self.folder / MARKER).read_text())

    @property
    def input_dim(self) -> int:
        return self.table_info["rows"]

    @property
    def embedding_dim(self) -> int:
        """The table's width (``pca_dims``, or the encoder's width when that is smaller or PCA is off)."""
        return self.table_info["dim"]

    @functools.cached_property
    def static_model(self):
        """The distilled ``model2vec.StaticModel``, its tokenizer truncating to ``max_length``."""
        require("model2vec", "static", "the static-embedding student")
        from model2vec import StaticModel

        model2vec_log = logging.getLogger("model2vec")
        level = model2vec_log.level
        model2vec_log.setLevel(logging.ERROR)  # its notice that max_length differs from the saved 512
        try:
            return StaticModel.from_pretrained(self.folder, max_length=self.max_length)
        finally:
            model2vec_log.setLevel(level)

    def initial_table(self) -> np.ndarray:
        """The distilled table [V, D] float32, where a student's token table starts."""
        return np.asarray(self.static_model.embedding, dtype=np.float32)

    # -- token bags ---------------------------------------------------------------------------------------------

    @property
    def max_chars(self) -> int | None:
        """model2vec's ``encode`` cuts a text to ``max_length`` × the median token length in characters first."""
        return None if self.max_length is None else self.max_length * self.table_info["median_token_length"]

    def fingerprint(self) -> str:
        return fingerprint_of("StaticTokenFeaturizer", {"table": self.table_key, "max_length": self.max_length})

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids as model2vec's ``encode`` takes them (character cut, truncation, unknown dropped)."""
        if self.max_chars is not None:
            texts = [text[: self.max_chars] for text in texts]
        return self.static_model.tokenize(list(texts))

    def transform(self, texts: list[str]) -> TokenBagInputs:
        return mean_bags(self.token_ids(texts))

    def _bags_path(self, source, split: str, cache) -> Path:
        key = cache_key(self.fingerprint(), source.fingerprint(), source.split(split).fingerprint())
        return cache.root / f"static-tokens-{key}.npz"

    def prepare(self, source, cache) -> None:
        """Distil the table (once) and tokenise every split once into ``cache``, each split's bags written
        atomically, so a half-written file is never read."""
        self.use_cache(cache)
        for split in SPLITS:
            path = self._bags_path(source, split, cache)
            if path.is_file():
                continue
            bags = self.transform(source.split(split).texts)
            fileio.atomic_write(path, functools.partial(np.savez, indptr=bags.indptr, ids=bags.ids,
                                                        weights=bags.weights))

    def featurize(self, source, split: str, cache) -> TokenBagInputs:
        """A split's bags: read from ``cache`` when :meth:`prepare` wrote them, else tokenised now."""
        self.use_cache(cache)
        path = self._bags_path(source, split, cache)
        if path.is_file():
            with np.load(path, allow_pickle=False) as saved:
                bags = TokenBagInputs(saved["indptr"], saved["ids"], saved["weights"])
            if len(bags) == len(source.split(split)):
                return bags
        return self.transform(source.split(split).texts)

    def export_spec(self) -> ExportSpec:
        """Padded (ids, weights) [N, L] into the graph; the tokenisation runs outside with the ``tokenizers``
        package and the distilled folder's ``tokenizer.json`` (copied beside the graph)."""
        info = self.table_info
        return ExportSpec(
            {"kind": self.kind, "encoder": self.encoder, "tokenizer": "tokenizer.json", "max_length": self.max_length,
             "max_chars": self.max_chars, "unk_id": info["unk_id"], "add_special_tokens": False,
             "weights": "each kept token 1 / the row's kept-token count (EmbeddingBag sum = model2vec's mean)",
             "padding": "ids / weights are [N, L]: each row's tokens, then token 0 at weight 0 to the batch's "
                        "longest row",
             "inputs": ["ids", "weights"]},
            {"ids": {0: "batch", 1: "tokens"}, "weights": {0: "batch", 1: "tokens"}}, feeds="bag",
            files={"tokenizer.json": self.folder / "tokenizer.json"})

