"""`lelp export --output` replaces an earlier export's own files and nothing else: a folder holding anything else is
refused in one sentence and left as it was; a staging folder a killed export left is removed on the next run, one
of a live process never."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_main

from .exports import Exported

EXPORT_FILES = ["featurizer.json", "labels.json", "model_card.json", "model_card.md", "student.onnx"]


def export_to(exported: Exported, output: Path):
    return run_main("export", "--config", str(exported.config), "--ckpt_path", str(exported.ckpt),
                    "--output", str(output), "--bench_seconds", "0")


def snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``folder``: its bytes (None for a folder) and its modification time in ns."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("lelp: error:")]
    assert len(lines) == 1 and lines[0].endswith(".") and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_a_folder_holding_anything_besides_an_export_is_refused_and_left_untouched(small_bag, tmp_path):
    output = tmp_path / "student"
    shutil.copytree(small_bag.folder, output)
    (output / "notes.txt").write_text("mine, not the export's")
    (output / "data").mkdir()
    (output / "data" / "rows.csv").write_text("text,label\nhello,1\n")
    before = snapshot(output)
    ran = export_to(small_bag, output)
    assert ran.returncode == 2
    line = error_line(ran.stderr)
    assert f"--output {output} holds 2 entries that are not an export's own files (data/, notes.txt)" in line
    assert snapshot(output) == before and hidden(tmp_path) == []


def test_a_folder_that_is_no_export_is_refused_naming_its_first_entries(small_bag, tmp_path):
    output = tmp_path / "photos"
    output.mkdir()
    for i in range(7):
        (output / f"img{i}.jpg").write_bytes(b"\xff\xd8")
    before = snapshot(output)
    ran = export_to(small_bag, output)
    assert ran.returncode == 2
    assert "holds 7 entries that are not an export's own files (img0.jpg, img1.jpg, img2.jpg, img3.jpg, img4.jpg, …)" \
        in error_line(ran.stderr)
    assert snapshot(output) == before and hidden(tmp_path) == []


def test_an_export_replaces_an_earlier_export_an_empty_and_a_missing_folder(small_bag, tmp_path):
    earlier = tmp_path / "earlier"
    shutil.copytree(small_bag.folder, earlier)
    (earlier / "model_card.md").write_text("an earlier card")
    empty = tmp_path / "empty"
    empty.mkdir()
    for output in (earlier, empty, tmp_path / "missing" / "student"):
        ran = export_to(small_bag, output)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert sorted(p.name for p in output.iterdir()) == EXPORT_FILES
        assert hidden(output.parent) == []
    assert (earlier / "model_card.md").read_text() != "an earlier card"


def test_an_output_that_is_a_file_is_one_sentence(small_bag, tmp_path):
    output = tmp_path / "student"
    output.write_text("not a folder")
    ran = export_to(small_bag, output)
    assert ran.returncode == 2 and f"--output {output} is a file" in error_line(ran.stderr)
    assert output.read_text() == "not a folder"


def test_a_stale_staging_folder_of_a_dead_export_is_removed_one_of_a_live_process_kept(small_bag, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(dead_pid, 0)
        output = tmp_path / "student"
        for pid in (dead_pid, live.pid):
            stage = tmp_path / f".student.tmp{pid}"
            stage.mkdir()
            (stage / "student.onnx").write_bytes(b"half written")
        ran = export_to(small_bag, output)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert hidden(tmp_path) == [f".student.tmp{live.pid}"]
        assert (tmp_path / f".student.tmp{live.pid}" / "student.onnx").read_bytes() == b"half written"
        assert sorted(p.name for p in output.iterdir()) == EXPORT_FILES
    finally:
        live.kill()
        live.wait()


def test_an_earlier_export_a_killed_swap_moved_aside_is_put_back(small_bag, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    aside = tmp_path / f".student.old{int(dead.stdout)}"
    shutil.copytree(small_bag.folder, aside)
    (aside / "notes.txt").write_text("not the export's")  # so that the export refuses it once it is back in place
    ran = export_to(small_bag, tmp_path / "student")
    assert ran.returncode == 2 and "(notes.txt)" in error_line(ran.stderr)
    assert hidden(tmp_path) == [] and (tmp_path / "student" / "notes.txt").is_file()
