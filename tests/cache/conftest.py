"""Fixtures of the `lelp cache` process tests: the command's options (``cache_args``), a byte-for-byte comparison of
two caches (``same_cache``) and the cache of one uninterrupted run (``uninterrupted_cache``)."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from helpers import run_lelp, tiny_run_args


def cache_args(cache_dir: Path, run_dir: Path) -> list[str]:
    """``lelp cache`` of the tiny tweets on CPU, in blocks of 8 rows (39 blocks in the features pass)."""
    return ["cache", *tiny_run_args(cache_dir, run_dir, "--trainer.accelerator", "cpu",
                                    "--data.teacher.batch_size", "8", wandb=False)]


def assert_same_cache(built: Path, reference: Path) -> None:
    """Every finished entry of ``reference`` is in ``built`` byte for byte (each file), and nothing else is."""
    entries = sorted(p.name for p in reference.iterdir() if p.is_dir())
    assert len(entries) == 6 and entries == sorted(p.name for p in built.iterdir() if p.is_dir())
    for entry in entries:
        files = sorted(p.name for p in (reference / entry).iterdir())
        assert files == sorted(p.name for p in (built / entry).iterdir()), entry
        _, mismatch, errors = filecmp.cmpfiles(reference / entry, built / entry, files, shallow=False)
        assert not mismatch and not errors, (entry, mismatch, errors)


@pytest.fixture(name="cache_args", scope="session")
def cache_args_fixture():
    return cache_args


@pytest.fixture(scope="session")
def same_cache():
    return assert_same_cache


@pytest.fixture(scope="session")
def uninterrupted_cache(tmp_path_factory) -> Path:
    """The cache one `lelp cache` run (see :func:`cache_args`) writes when nothing stops or races it."""
    root = tmp_path_factory.mktemp("uninterrupted")
    proc = run_lelp(*cache_args(root / "cache", root), cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "cache"
