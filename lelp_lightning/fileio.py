"""Atomic writes and a cross-process lock: the one place that decides how a file is written.

Every file the framework writes that another process (or a resumed run) reads back goes through :func:`atomic_write`:
the content is written to a temporary file beside the target (same folder, so the rename stays on one file
system), flushed and fsynced, then renamed over the target. A reader sees the old file or the whole new one,
never half of it, even after a kill or a power cut. A temporary file of a killed writer is named
``.<name>.tmp<pid>`` and never read back as complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock


def temporary_name(path: Path) -> Path:
    """The hidden temporary name a write of ``path`` by this process uses."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def temporaries(folder: Path) -> list[Path]:
    """The temporary files that writes killed before their rename left in ``folder`` (any process's)."""
    return sorted(folder.glob(".*.tmp[0-9]*"))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened / synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(binary_file)``: temporary file, fsync, rename. Returns ``path``."""

    def write_to(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    return atomic_write_file(path, write_to)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path | str, payload: Any, **dumps) -> Path:
    """``json.dumps(payload, indent=1, **dumps)`` written atomically."""
    return atomic_write_text(path, json.dumps(payload, **{"indent": 1, **dumps}))


def atomic_write_file(path: Path | str, write_to: Callable[[Path], Any]) -> Path:
    """For writers that want a file name (``savefig``, ``to_csv``, ``torch.save``, ``np.savez``): ``write_to(tmp)``
    writes the temporary file, which is then fsynced and renamed over ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write_to(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def locked(lock_file: Path | str) -> Iterator[None]:
    """Hold an exclusive cross-process lock on ``lock_file`` (created if missing) for the ``with`` block."""
    with FileLock(str(lock_file)):
        yield
