"""The ``lelp`` console script: LightningCLI(DistillModule, DistillDataModule) plus a few subcommands, one table
of them in :mod:`lelp_lightning.commands` (``lelp --help`` lists them).

    lelp fit --config configs/quickstart.yaml      # train, then test and write summary.json
    lelp validate|test|predict --config <run>/config.yaml --ckpt_path <run>/checkpoints/last.ckpt
    lelp cache --config configs/quickstart.yaml    # run the teacher into the cache ahead of time
    lelp cache ... --trainer.strategy ddp --trainer.devices N   # ... with N processes (docs/distributed.md)
    lelp strategies | lelp objectives | lelp students   # what is registered (plugins included)
    lelp tune --config my_run.yaml [--tune configs/tune/quick.yaml] [--tune.n_trials 40]   # Optuna study (docs/tune.md)
    lelp active --config my_run.yaml [--active configs/active/rad.yaml] [--active.budget 0.3]   # docs/active.md
    lelp selectors                                  # the registered selectors of lelp active
    lelp search --config my_run.yaml --search.space configs/search/hashed_bag.yaml   # LayerNAS (docs/search.md)
    lelp export --config <run>/config.yaml --ckpt_path <run>/checkpoints/last.ckpt --output student/   # ONNX + card
    lelp serve student/ [--port 8000] [--max_batch_size 64]   # HTTP JSON endpoint (docs/serving.md)

Plugins (entry-point groups ``lelp_lightning.strategies`` / ``.objectives`` / ``.students``) are imported
before any argument is parsed, so their classes work by short name in YAML; a short name is recorded in the
saved config as its class's import path. Every command ends bad input the same way: a
:class:`~lelp_lightning.errors.LelpError` (also when jsonargparse wraps it, and a missing extra) is one line
``lelp: error: ...`` on stderr and exit status 2. This module imports torch and Lightning only when a command
needs them (``lelp --help`` and ``lelp serve`` never do); ``build_cli`` / ``fit`` / ``LelpCLI``, the in-process
API, live in :mod:`lelp_lightning.runs` and are imported from here on first use.
"""

from __future__ import annotations

import importlib
import logging
import sys

from lelp_lightning.commands import COMMANDS, HELP, overview
from lelp_lightning.errors import LelpError, lelp_error_behind
from lelp_lightning.extras import missing_extra

__all__ = ["console_main", "main"]  # and, on first use, runs.LelpCLI / build_cli / fit (the in-process API)


def __getattr__(name: str):
    if name in ("LelpCLI", "build_cli", "fit"):
        return getattr(importlib.import_module("lelp_lightning.runs"), name)
    raise AttributeError(f"module 'lelp_lightning.cli' has no attribute {name!r}")


def _lelp_error_behind(err: BaseException | None) -> LelpError | None:
    """The LelpError behind ``err``, or the one sentence for a missing extra."""
    return lelp_error_behind(err) or missing_extra(err)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``lelp``; ``args`` defaults to ``sys.argv[1:]`` (tests pass their own)."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in HELP:
        print(overview())
        return 0
    name, args = args[0], args[1:]
    command = COMMANDS.get(name)
    try:
        if command is None:
            raise LelpError(f"{name!r} is not a lelp command; expected one of {', '.join(COMMANDS)} "
                            "(`lelp --help` describes them).")
        if any(arg in HELP for arg in args) and (text := command.help(name)) is not None:
            print(text)
            return 0
        if command.runs_models:  # Lightning first: it gives its log its own handler only while the root has none
            from lelp_lightning.registry import load_plugins
            from lelp_lightning.runs import hide_notices_a_user_cannot_act_on

            hide_notices_a_user_cannot_act_on()
        logging.basicConfig(format="lelp: %(message)s")
        logging.getLogger("lelp_lightning").setLevel(logging.INFO)
        if command.runs_models:
            load_plugins()
        try:
            return command.run(name, args)
        except KeyboardInterrupt:
            if not command.resumable:
                raise
            print(f"lelp: {name} interrupted; the same command resumes it.", file=sys.stderr)
            return 130
    except Exception as err:
        cause = _lelp_error_behind(err)
        if cause is None:
            raise
        print(f"lelp: error: {cause}", file=sys.stderr)
        return 2


def console_main() -> None:
    sys.exit(main())
