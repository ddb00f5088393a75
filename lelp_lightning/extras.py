"""Optional dependencies by feature (the extras of ``pyproject.toml``): a missing one is one sentence naming the
``pip install`` line that adds it, never an ImportError's traceback."""

from __future__ import annotations

import importlib

from lelp_lightning.errors import LelpError

# the top-level module of each optional dependency → the extra that installs it
EXTRA_OF = {"transformers": "text", "pyarrow": "text", "wandb": "wandb", "optuna": "tune", "optuna_integration": "tune",
            "matplotlib": "tune", "onnx": "serve", "onnxruntime": "serve", "tokenizers": "serve", "litserve": "serve"}


def install_line(extra: str) -> str:
    return f"pip install 'lelp-lightning[{extra}]'"


def require(module: str, extra: str, feature: str) -> None:
    """Import ``module`` (so a feature checks its extra before it starts any work), or raise one sentence:
    ``<feature> needs the [<extra>] extra: pip install 'lelp-lightning[<extra>]'.``"""
    try:
        importlib.import_module(module)
    except ImportError:
        raise LelpError(f"{feature} needs the [{extra}] extra ({module} is not installed): "
                        f"{install_line(extra)}.") from None


def missing_extra(err: BaseException | None) -> LelpError | None:
    """The one sentence for an optional dependency found missing deep inside a run (a config that names the
    sentence-encoder teacher or the W&B logger without their extra), or None when ``err`` is not one."""
    seen = set()
    while err is not None and id(err) not in seen:
        name = (err.name or "").partition(".")[0] if isinstance(err, ImportError) else None
        # Lightning names a missing package only in its message ("Requirement 'wandb>=0.12.10' not met"), which
        # jsonargparse copies into the error it raises while it instantiates the logger
        module = next((m for m in EXTRA_OF if name == m or f"Requirement '{m}" in str(err)), None)
        if module is not None:
            extra = EXTRA_OF[module]
            return LelpError(f"this command needs the [{extra}] extra ({module} is not installed): "
                             f"{install_line(extra)}.")
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
