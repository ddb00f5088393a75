"""Reading a checkpoint a user hands over without ever running code from it.

A PyTorch checkpoint is a pickle, and a pickle can call any function while it loads. Every checkpoint the
framework reads (``--ckpt_path`` of fit / validate / test / predict and export, the fine-tuned teacher's resume
state) is loaded with ``torch.load(weights_only=True)``: tensors, containers and plain values only. The
checkpoints the framework writes hold nothing else, so nothing needs allow-listing.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from lelp_lightning.errors import LelpError


def load_checkpoint(path: str | Path, expected: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing file, a file that is no checkpoint, or one
    that would run code while it loads is a :class:`LelpError` naming ``expected`` (what the file should be).
    ``mmap``: map the tensors instead of reading them (a check of the pickle alone, milliseconds for any size)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise LelpError(f"{path} is not a file; expected {expected}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # torch names the function or class it refused to load
            raise LelpError(f"{path} cannot be read as a checkpoint (UnpicklingError); expected {expected}.") from None
        raise LelpError(f"{path} holds Python objects other than tensors and plain values, which could run code "
                        f"when loaded, so it was not loaded; expected {expected}.") from None
    except Exception as err:  # a truncated file, a zip that is no checkpoint, plain text ...
        raise LelpError(f"{path} cannot be read as a checkpoint ({type(err).__name__}); expected {expected}.") from None


def check_ckpt_option(ckpt_path: Any, weights_only: Any, expected: str) -> None:
    """What a run's ``--ckpt_path`` / ``--weights_only`` must satisfy before any data work: a file a safe load
    accepts (Lightning's keywords ``last``, ``best``, ``hpc``, ``registry`` pass through), and never
    ``weights_only: false``. Lightning loads the file itself right after, so this reads only its pickle."""
    if weights_only is False:
        raise LelpError("--weights_only false is refused: lelp never loads a checkpoint in a way that can run code "
                        "from it; leave weights_only unset (or true).")
    if ckpt_path is None or str(ckpt_path) in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
        return
    load_checkpoint(ckpt_path, expected, mmap=True)
