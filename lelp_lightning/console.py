"""The ``lelp`` console script's entry point: ``lelp serve`` starts without importing torch or Lightning (and so
do LitServe's worker processes, which import the script again); every other subcommand is
:func:`lelp_lightning.cli.main`."""

from __future__ import annotations

import sys


def console_main() -> None:
    if sys.argv[1:2] == ["serve"]:
        from lelp_lightning.errors import LelpError
        from lelp_lightning.serving.server import parse_args, serve

        try:
            serve(parse_args(sys.argv[2:]))
        except LelpError as err:
            print(f"lelp: error: {err}", file=sys.stderr)
            sys.exit(2)
        sys.exit(0)
    from lelp_lightning.cli import console_main as main

    main()
