"""Shared fixtures: small real data (a few hundred tweets), the real MiniLM teacher, a session-wide cache.

Plain helpers (``run_main``, ``tiny_run_args``, ``TINY_TWEETS`` ...) live in helpers.py; tests import them from
there, never from this file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import tiny_teacher, tiny_tweets

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tweets_cache_dir(tmp_path_factory) -> Path:
    """A teacher cache of 300 real tweets through the real MiniLM teacher, built once per test session."""
    from lelp_lightning.data.datamodule import DistillDataModule
    from lelp_lightning.strategies import LinearProjectionStrategy

    cache = tmp_path_factory.mktemp("cache")
    dm = DistillDataModule(tiny_tweets(), tiny_teacher(), LinearProjectionStrategy(num_subclasses=2),
                           cache_dir=str(cache), progress=False)
    dm.prepare_data()
    return cache


@pytest.fixture
def tweets_datamodule(tweets_cache_dir):
    """A factory: ``tweets_datamodule(strategy, **kwargs)`` → a set-up DistillDataModule on the cached tweets."""
    from lelp_lightning.data.datamodule import DistillDataModule

    def make(strategy, **kwargs):
        dm = DistillDataModule(tiny_tweets(), tiny_teacher(), strategy, cache_dir=str(tweets_cache_dir),
                               progress=False, **kwargs)
        dm.prepare_data()
        dm.setup("fit")
        return dm

    return make
