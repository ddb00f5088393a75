"""fileio: a write that dies before its rename leaves the old file; the lock lets one process in at a time."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lelp_lightning import fileio

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, *args, **popen) -> subprocess.Popen:
    """A separate Python process running ``code`` with this checkout importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, **popen)


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")

    def write(handle):
        handle.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fileio.atomic_write(path, write)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_process_killed_between_write_and_rename_leaves_the_old_file(tmp_path):
    """SIGKILL after the new content reached the temporary file, before the rename: the target still holds the
    old content, and the killed writer's temporary is a hidden file that ``temporaries`` finds (for clean-up)."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    child = python("""
        import sys, time
        from lelp_lightning import fileio

        def write(handle):
            handle.write(b"new" * 100_000)
            handle.flush()
            print("written", flush=True)
            time.sleep(120)

        fileio.atomic_write(sys.argv[1], write)
    """, path, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"old"
    stale = tmp_path / f".weights.bin.tmp{child.pid}"
    assert stale.read_bytes() == b"new" * 100_000
    assert fileio.temporaries(tmp_path) == [stale]
    fileio.atomic_write_bytes(path, b"newer")  # the next writer is not disturbed by the stale temporary
    assert path.read_bytes() == b"newer"


def test_an_interrupted_first_write_leaves_no_target(tmp_path):
    path = tmp_path / "new.txt"

    def write(handle):
        handle.write(b"x")
        raise KeyboardInterrupt  # not an Exception: Ctrl-C, or a signal handler's exit

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(path, write)
    assert not path.exists() and fileio.temporaries(tmp_path) == []


def test_json_round_trip_equals_json_loads(tmp_path):
    payload = {"b": [1, 2.5, None, True], "a": {"nested": "ünïcode"}, "n": 10**20}
    path = fileio.atomic_write_json(tmp_path / "p.json", payload, sort_keys=True)
    text = path.read_text()
    assert json.loads(text) == payload
    assert text == json.dumps(payload, indent=1, sort_keys=True)  # the documented default indent, options passed on
    assert fileio.atomic_write_text(tmp_path / "t.txt", "a\nb").read_text() == "a\nb"


def test_writers_that_want_a_file_name_and_writers_that_want_a_handle(tmp_path):
    """``atomic_write_file`` for a writer that takes a name; ``np.savez`` takes a handle (given a name, it would
    append ``.npz`` to the temporary's)."""
    text = fileio.atomic_write_file(tmp_path / "a.csv", lambda tmp: Path(tmp).write_text("x,y\n1,2\n"))
    assert text.read_text() == "x,y\n1,2\n"
    arrays = fileio.atomic_write(tmp_path / "c.npz", lambda handle: np.savez(handle, w=np.arange(3)))
    np.testing.assert_array_equal(np.load(arrays)["w"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "c.npz"]


def test_the_lock_excludes_a_second_process(tmp_path):
    """Two processes append a begin and an end line per turn, pausing between them while holding the lock:
    every begin is followed by the same process's end (no interleaving), and both got their turns."""
    log, go, turns = tmp_path / "log.txt", tmp_path / "go", 15
    code = """
        import sys, time
        from pathlib import Path
        from lelp_lightning import fileio

        log, go, tag, turns = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        while not go.exists():
            time.sleep(0.005)
        for _ in range(turns):
            with fileio.locked(str(log) + ".lock"):
                with open(log, "a") as f:
                    f.write(f"{tag} begin\\n")
                time.sleep(0.01)
                with open(log, "a") as f:
                    f.write(f"{tag} end\\n")
            time.sleep(0.001)
    """
    children = [python(code, log, go, tag, turns) for tag in ("A", "B")]
    go.touch()
    assert [child.wait(timeout=120) for child in children] == [0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * turns
    pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
    assert all(begin.split() == [end.split()[0], "begin"] and end.endswith(" end") for begin, end in pairs), lines
    assert sorted(begin for begin, _ in pairs) == ["A begin"] * turns + ["B begin"] * turns
