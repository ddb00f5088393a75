"""What the bundled datasets share: finding a data package on disk, stratified splits, taking rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from lelp_lightning.core import SplitData
from lelp_lightning.errors import LelpError


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (some data packages import slowly)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LelpError(
            f"the data package {name!r} is not installed; run scripts/setup.sh (it installs requirements-data.txt)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def stratified_three_way(labels: np.ndarray, val: float, test: float, seed: int, strata=None):
    """Indices of a stratified train/val/test split (fractions of all rows)."""
    idx = np.arange(len(labels))
    strata = labels if strata is None else strata
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed, stratify=strata)
    rel_val = val / (1.0 - test)
    train_idx, val_idx = train_test_split(rest, test_size=rel_val, random_state=seed, stratify=strata[rest])
    return np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)


def take(name, texts, labels, ids, fine=None) -> SplitData:
    return SplitData(
        name=name,
        texts=[texts[i] for i in ids],
        labels=np.asarray(labels)[ids].astype(np.int64),
        row_ids=np.asarray(ids, dtype=np.int64),
        fine_labels=None if fine is None else np.asarray(fine)[ids].astype(np.int64),
    )
