"""Cross-validation folds of the training split: train on k − 1 folds of the labeled rows, score the held-out one.

A run with ``data.folds = k`` (k ≥ 2) and ``data.fold = i`` reads the same teacher cache as any run, and sees
two different splits: ``val`` is fold i of the *labeled* training rows, ``train`` is every other training row
(the unlabeled ones of a semi-supervised run included: they never carry a label to score). The run's own
validation and test splits are not read by its training or its validation. The folds are stratified by label and
fixed by ``fold_seed``, so every configuration compared on them sees the very same rows — the comparison is paired.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.model_selection import StratifiedKFold

from lelp_lightning.cache import CachedSplit
from lelp_lightning.errors import LelpError


def fold_rows(labels: np.ndarray, labeled_rows: np.ndarray | None, folds: int, fold: int,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the training rows a fold run trains on, the labeled rows it is scored on): positions in the training split.

    The labeled rows (``labeled_rows``; None: all) are split into ``folds`` stratified folds, shuffled with
    ``seed``; fold ``fold`` is held out. Both arrays are sorted."""
    if folds < 2:
        raise LelpError(f"data.folds must be 0 (no cross-validation) or at least 2, got {folds}.")
    if not 0 <= fold < folds:
        raise LelpError(f"data.fold must be between 0 and data.folds - 1 = {folds - 1}, got {fold}.")
    labeled = np.arange(len(labels), dtype=np.int64) if labeled_rows is None else np.asarray(labeled_rows, np.int64)
    classes, counts = np.unique(np.asarray(labels)[labeled], return_counts=True)
    if counts.min() < folds:
        raise LelpError(f"data.folds={folds} needs at least {folds} labeled training rows of every class; class "
                        f"{classes[counts.argmin()]} has {counts.min()}. Use fewer folds.")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, held = list(splitter.split(labeled, np.asarray(labels)[labeled]))[fold]
    held_out = np.sort(labeled[held])
    kept = np.setdiff1d(np.arange(len(labels), dtype=np.int64), held_out, assume_unique=True)
    return kept, held_out


def take(entry: CachedSplit, rows: np.ndarray) -> CachedSplit:
    """The cache entry's arrays at ``rows`` (the classifier and manifest as they are)."""
    return dataclasses.replace(entry, embedding=np.asarray(entry.embedding[rows]),
                               logits=np.asarray(entry.logits[rows]), label=np.asarray(entry.label[rows]),
                               row_id=np.asarray(entry.row_id[rows]))
