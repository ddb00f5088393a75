"""The ``lelp`` console script's entry point. Light on purpose: LitServe's worker processes import the script
again, and ``lelp serve`` / ``lelp --help`` import neither torch nor Lightning (:mod:`lelp_lightning.cli` and
its command table import them only inside the commands that need them)."""

from __future__ import annotations


def console_main() -> None:
    from lelp_lightning.cli import console_main as main

    main()
