"""Two `lelp cache` runs on one cache entry at once: the teacher runs once, both succeed, one cache."""

import os
import subprocess

import pytest
from helpers import LELP, TINY_TWEETS

pytestmark = pytest.mark.slow


def rows_written(stderr: str, name: str) -> int:
    """Rows this run's teacher encoded into the ``name`` pass (0 when it did not run that pass)."""
    return sum(int(line.split(" wrote ")[1].split()[0]) for line in stderr.splitlines()
               if f"teacher pass [{name}]: rank" in line)


def test_two_lelp_cache_runs_at_once_run_the_teacher_once_and_both_succeed(cache_args, same_cache, uninterrupted_cache,
                                                                           tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([LELP, *cache_args(tmp_path / "cache", tmp_path / f"run{i}")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stderr[-4000:]
        assert "train: 210 rows" in stdout, stdout
    stderrs = [stderr for _, stderr in outs]
    for name in ("features", "outputs"):  # every row encoded once, by one of the two runs
        assert sum(rows_written(stderr, name) for stderr in stderrs) == TINY_TWEETS["max_rows"], stderrs
    assert any("waiting for" in stderr for stderr in stderrs), stderrs  # the second run said why it waited
    assert not list((tmp_path / "cache").glob("*.partial"))
    same_cache(tmp_path / "cache", uninterrupted_cache)
