"""Fixtures the serving tests share: one real hashed-bag run exported once for the tests of the server's bounds and
of the export folder."""

from __future__ import annotations

import pytest
from helpers import tiny_run_args

from .exports import Exported, fit_and_export


@pytest.fixture(scope="package")
def small_bag(tweets_cache_dir, tmp_path_factory) -> Exported:
    """A real tiny hashed-bag run (4096 buckets) and its export, fitted once for the package."""
    root = tmp_path_factory.mktemp("small-bag")
    return fit_and_export(root, *tiny_run_args(tweets_cache_dir, root, "--data.featurizer.init_args.num_buckets",
                                               "4096", wandb=False))
