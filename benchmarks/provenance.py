"""Where a benchmark result comes from: the git state, the machine, the package versions.

One copy for every benchmark (``accuracy/grid.py``, ``throughput/*.py``), so that their records and file names
describe a run the same way. Imports nothing heavy: torch loads only for :func:`hardware_tag`.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_state(*paths: str) -> tuple[str, bool]:
    """(HEAD's sha, whether ``paths`` or this module, the code a result depends on, have uncommitted changes)."""
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", *paths, "benchmarks/provenance.py"],
                                cwd=REPO, capture_output=True, text=True).stdout.strip())
    return sha, dirty


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(**extra) -> dict:
    """The CPU, its core count and the platform, then ``extra`` (what one benchmark records beside them)."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(), **extra}


def versions(*packages: str) -> dict[str, str]:
    """``{package: version}`` of ``packages``, and Python's: the software a record depends on."""
    return {p: importlib.metadata.version(p) for p in packages} | {"python": platform.python_version()}


def version_tag(*packages: str) -> str:
    """e.g. ``torch2.13.0-lightning2.6.6``: the installed ones of ``packages``, for a result's file name."""
    parts = []
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            parts.append(f"{package.replace('-', '')}{importlib.metadata.version(package).split('+')[0]}")
    return "-".join(parts)


def hardware_tag() -> str:
    """e.g. ``cpu-intel-xeon-processor-2threads`` or ``nvidia-h100-80gb-hbm3``, for a result's file name."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"cpu {re.sub(r'[(][^)]*[)]', '', cpu_name())} {torch.get_num_threads()}threads"
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def write_record(folder: Path, sha: str, record: dict) -> Path:
    """``record`` as ``folder/<UTC time>_<sha>.json``, written atomically (a record is never rewritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{stamp}_{sha[:10]}.json"
    path.with_suffix(".tmp").write_text(json.dumps(record, indent=1))
    os.replace(path.with_suffix(".tmp"), path)
    return path
