"""SIGTERM during `lelp cache`: the pass stops at the next block boundary, says so, and the same command resumes it."""

import os
import re
import signal
import subprocess
import time

import pytest
from helpers import LELP

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_teacher_pass_at_a_block_boundary_and_the_same_command_resumes_it(
        cache_args, same_cache, uninterrupted_cache, tmp_path):
    cache_dir = tmp_path / "cache"
    args = cache_args(cache_dir, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen([LELP, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        logged = lambda: sum(f.read_text().count("\n") for f in cache_dir.glob("*.partial/blocks-rank*.log"))
        deadline = time.monotonic() + 300
        while proc.poll() is None and logged() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None and logged() >= 1, "no block was written before the pass ended"
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("lelp cache went on after SIGTERM")
        stopped_after = time.monotonic() - sent
        stderr.seek(0)
        text = stderr.read()
    assert code == 143, text[-3000:]
    assert stopped_after < 10, stopped_after
    lines = [line for line in text.splitlines() if "stopped on SIGTERM" in line]
    assert len(lines) == 1, text[-3000:]
    assert "the same command resumes it" in lines[0] and " of 39 blocks " in lines[0], lines[0]
    assert not list(cache_dir.glob("encoder-*/manifest.json"))  # stopped mid-pass: nothing sealed half-written

    resumed = subprocess.run([LELP, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    line = next(line for line in resumed.stderr.splitlines() if "teacher pass [features]: rank 0" in line)
    cached_before = int(re.search(r"; (\d+) were cached before this run$", line).group(1))
    assert cached_before > 0, line  # the blocks written before SIGTERM were kept
    same_cache(cache_dir, uninterrupted_cache)
