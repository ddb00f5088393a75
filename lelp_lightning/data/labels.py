"""Which training labels a run may see: all of them (supervised), or a labeled part (semi-supervised).

In the semi-supervised setting the training split is a small labeled part plus an unlabeled transfer set
that only the teacher labels. The labeled part is a stratified sample of ``num_labeled`` training rows,
fixed by a seed; every other training row carries the label ``UNLABELED`` in the teacher cache and in
every batch, so neither the teacher's head nor any objective can read its true label.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from lelp_lightning.errors import LelpError


def choose_labeled_rows(labels: np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """Sorted positions of a stratified sample of ``num_labeled`` rows (every row when it asks for all)."""
    n = len(labels)
    if not 0 < num_labeled <= n:
        raise LelpError(f"num_labeled must be between 1 and the {n} training rows, got {num_labeled}.")
    if num_labeled == n:
        return np.arange(n, dtype=np.int64)
    try:
        rows, _ = train_test_split(np.arange(n), train_size=num_labeled, random_state=seed, stratify=labels)
    except ValueError as err:
        raise LelpError(f"num_labeled={num_labeled} cannot hold a stratified sample of the {n} training rows "
                        f"({err}); use at least one row per class on both sides.") from None
    return np.sort(rows).astype(np.int64)
