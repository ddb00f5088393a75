"""Student inputs as an encoder's token ids, for a student that fine-tunes the encoder itself (the transformer student).

Each split is tokenised once, with the encoder's own ``tokenizer.json`` (the very tokeniser the exported predictor
runs), into the data module's cache (``tokens-<key>.npz``: every row's ids end to end and where each row starts).
A batch is padded to its own longest row, and the rows' token counts let training batches group rows of similar
length (:class:`~lelp_lightning.samplers.GlobalBatchSampler`), which pads far less than batches of random rows.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch

from lelp_lightning import fileio
from lelp_lightning.cache import cache_key
from lelp_lightning.core import SPLITS, fingerprint_of
from lelp_lightning.data.featurizers import ExportSpec, Featurizer, StudentInputs
from lelp_lightning.encoders.sentence import resolve_model_path
from lelp_lightning.errors import LelpError

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TokenIdInputs(StudentInputs):
    """Rows as token ids (``ids`` of every row end to end, row i being ``ids[offsets[i]:offsets[i + 1]]``); a batch
    is ``input_ids`` and ``attention_mask`` [B, its longest row] (and ``token_type_ids``, all 0 for one text, when
    the model reads them), padded on the right with ``pad_id``.

    ``lengths`` (each row's token count) and ``bucket_batches`` > 1 make the training batches length-bucketed
    (:func:`lelp_lightning.data.dataset.batch_loader`)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, pad_id: int, inputs: tuple[str, ...],
                 bucket_batches: int = 1):
        self.ids, self.offsets = ids.astype(np.int64), offsets.astype(np.int64)
        self.lengths = np.diff(self.offsets)
        self.pad_id, self.inputs, self.bucket_batches = pad_id, inputs, bucket_batches

    def __len__(self) -> int:
        return len(self.lengths)

    def gather(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        lengths = self.lengths[index]
        width = max(1, int(lengths.max(initial=0)))
        attended = np.arange(width) < lengths[:, None]
        starts = np.cumsum(lengths) - lengths  # where each row starts among the gathered ids
        positions = np.arange(int(lengths.sum())) + np.repeat(self.offsets[index] - starts, lengths)
        input_ids = np.full((len(index), width), self.pad_id, np.int64)
        input_ids[attended] = self.ids[positions]  # row-major: each row's ids, in order, on its attended positions
        batch = {"input_ids": torch.from_numpy(input_ids),
                 "attention_mask": torch.from_numpy(attended.astype(np.int64))}
        if "token_type_ids" in self.inputs:
            batch["token_type_ids"] = torch.zeros((len(index), width), dtype=torch.int64)
        return batch


class EncoderTokenFeaturizer(Featurizer):
    """Texts → ``encoder``'s token ids (truncated to ``max_length``), for the ``transformer`` student.

    ``input_dim`` is the tokeniser's vocabulary size (the range of the ids; the student checks that its encoder's
    embedding table covers it, and needs no other size). ``bucket_batches``: training batches are cut from chunks of
    that many batches of the epoch's shuffled rows, sorted by token count within a chunk, and then run in a shuffled
    order (deterministic under the seed, the same for any number of processes); 1 gives plain shuffled batches.
    """

    kind = "encoder_tokens"

    def __init__(self, encoder: str = "all-MiniLM-L6-v2", max_length: int = 128, bucket_batches: int = 50):
        if max_length < 2:
            raise LelpError(f"EncoderTokenFeaturizer's max_length must be >= 2 (room for the special tokens), "
                            f"got {max_length}.")
        if bucket_batches < 1:
            raise LelpError(f"EncoderTokenFeaturizer's bucket_batches must be >= 1 (1: plain shuffled batches), "
                            f"got {bucket_batches}.")
        self.encoder, self.max_length, self.bucket_batches = encoder, max_length, bucket_batches

    @functools.cached_property
    def path(self) -> Path:
        """The encoder's local folder; it must hold a fast tokeniser's ``tokenizer.json``."""
        path = resolve_model_path(self.encoder)
        if not (path / "tokenizer.json").is_file():
            raise LelpError(f"the encoder {self.encoder!r} has no tokenizer.json in {path}; EncoderTokenFeaturizer "
                            "needs a fast tokenizer's tokenizer.json (the one the exported student tokenises with).")
        return path

    @functools.cached_property
    def _tokens(self) -> tuple:
        """(the ``tokenizers`` tokeniser truncating to ``max_length``, its pad id, the model's input names)."""
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_length)
        tokenizer.no_padding()
        described = AutoTokenizer.from_pretrained(self.path)
        inputs = tuple(n for n in MODEL_INPUTS if n in described.model_input_names)
        return tokenizer, described.pad_token_id or 0, described.pad_token, inputs

    @property
    def input_dim(self) -> int:
        return self._tokens[0].get_vocab_size(with_added_tokens=True)

    def fingerprint(self) -> str:
        """What the ids depend on: the tokeniser's files and ``max_length`` (not the weights, not the bucketing)."""
        files = {name: hashlib.sha256((self.path / name).read_bytes()).hexdigest()[:16]
                 for name in ("tokenizer.json", "tokenizer_config.json") if (self.path / name).is_file()}
        return fingerprint_of("EncoderTokenFeaturizer", {"tokenizer": files, "max_length": self.max_length})

    def _inputs(self, ids: np.ndarray, offsets: np.ndarray) -> TokenIdInputs:
        _, pad_id, _, inputs = self._tokens
        return TokenIdInputs(ids, offsets, pad_id, inputs, self.bucket_batches)

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every text's ids end to end as int32, the offsets [n + 1] where each starts)."""
        encodings = self._tokens[0].encode_batch(list(texts))
        offsets = np.zeros(len(encodings) + 1, np.int64)
        offsets[1:] = np.cumsum([len(e.ids) for e in encodings])
        ids = np.fromiter((i for e in encodings for i in e.ids), np.int32, count=int(offsets[-1]))
        return ids, offsets

    def transform(self, texts: list[str]) -> TokenIdInputs:
        return self._inputs(*self.tokenize(texts))

    def _tokens_path(self, source, split: str, cache) -> Path:
        data = source.split(split)
        return cache.root / f"tokens-{cache_key(self.fingerprint(), source.fingerprint(), data.fingerprint())}.npz"

    def prepare(self, source, cache) -> None:
        """Tokenise every split once into ``cache`` (``tokens-<key>.npz``, keyed by the tokeniser's, the source's and
        the split's fingerprints), written atomically (:mod:`lelp_lightning.fileio`)."""
        for split in SPLITS:
            path = self._tokens_path(source, split, cache)
            if path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            ids, offsets = self.tokenize(source.split(split).texts)
            fileio.atomic_write(path, functools.partial(np.savez, ids=ids, offsets=offsets))

    def featurize(self, source, split: str, cache) -> TokenIdInputs:
        """A split's token ids: read from ``cache`` when :meth:`prepare` wrote them, else tokenised now."""
        path = self._tokens_path(source, split, cache)
        if path.is_file():
            try:
                with np.load(path) as saved:
                    ids, offsets = saved["ids"], saved["offsets"]
                if len(offsets) == len(source.split(split)) + 1 and offsets[-1] == len(ids):
                    return self._inputs(ids, offsets)
            except (OSError, ValueError, KeyError):  # unreadable (written by other means): tokenised again
                pass
        return self.transform(source.split(split).texts)

    def export_spec(self) -> ExportSpec:
        """Token ids into the graph (the student's encoder is inside it), tokenised by the encoder's own
        ``tokenizer.json``, copied beside the graph."""
        _, pad_id, pad_token, inputs = self._tokens
        return ExportSpec(
            {"kind": self.kind, "encoder": self.encoder, "max_length": self.max_length,
             "tokenizer": "tokenizer.json", "pad_id": pad_id, "pad_token": pad_token, "precision": "fp32",
             "inputs": list(inputs)},
            {name: {0: "batch", 1: "tokens"} for name in inputs}, feeds="tokens",
            files={"tokenizer.json": self.path / "tokenizer.json"})
