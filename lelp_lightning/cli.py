"""The ``lelp`` console script: LightningCLI(DistillModule, DistillDataModule) plus a few subcommands.

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
saved config as its class's import path. Bad input (a
:class:`~lelp_lightning.errors.LelpError`, also when jsonargparse wraps it) ends as one line
``lelp: error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import shlex
import sys

from lelp_lightning.cache.teacher_pass import build_teacher_cache
from lelp_lightning.objectives import objectives
from lelp_lightning.registry import load_plugins
from lelp_lightning.runs import LelpCLI, build_cli, fit, hide_notices_a_user_cannot_act_on, lelp_error_behind
from lelp_lightning.strategies import strategies
from lelp_lightning.students import students

__all__ = ["LelpCLI", "build_cli", "fit", "main"]  # build_cli / fit / LelpCLI live in runs: the in-process API


def _list(registry) -> str:
    width = max(len(n) for n in registry.names())
    return "\n".join(f"{e.name:<{width}}  {e.cls.__name__:<28} {e.description}" for e in registry.entries())


def _resumable(command: str, run) -> int:
    """Run a command that resumes where it stopped; Ctrl-C ends it with status 130 and says how to resume."""
    try:
        run()
    except KeyboardInterrupt:
        print(f"lelp: {command} interrupted; the same command resumes it.", file=sys.stderr)
        return 130
    return 0


def main(args: list[str] | None = None) -> int:
    """Entry point of ``lelp``; ``args`` defaults to ``sys.argv[1:]`` (tests pass their own)."""
    args = list(sys.argv[1:] if args is None else args)
    hide_notices_a_user_cannot_act_on()
    logging.basicConfig(format="lelp: %(message)s")
    logging.getLogger("lelp_lightning").setLevel(logging.INFO)
    try:
        load_plugins()
        if args[:1] == ["strategies"]:
            print(_list(strategies))
            return 0
        if args[:1] == ["objectives"]:
            print(_list(objectives))
            return 0
        if args[:1] == ["students"]:
            print(_list(students))
            return 0
        if args[:1] == ["selectors"]:
            from lelp_lightning.active import selectors

            print(_list(selectors))
            return 0
        if args[:1] == ["cache"]:
            cli = build_cli(args[1:], run=False)
            build_teacher_cache(cli.trainer, cli.datamodule.plan)  # Lightning predict over the trainer's processes
            if not cli.trainer.is_global_zero:
                return 0
            for split in ("train", "val", "test"):
                entry = cli.datamodule.split_cache(split)
                print(f"{split}: {len(entry)} rows, embedding {entry.embedding.shape[1]}-d, cached at {entry.path}")
            return 0
        if args[:1] == ["tune"]:
            from lelp_lightning.tune.study import parse_options, run_study, split_tune_args

            run_args, tune_args = split_tune_args(args[1:])
            return _resumable("tune", lambda: run_study(run_args, parse_options(tune_args)))
        if args[:1] == ["active"]:
            from lelp_lightning.active.loop import parse_options as parse_active
            from lelp_lightning.active.loop import run_active, split_active_args

            run_args, active_args = split_active_args(args[1:])
            return _resumable("active", lambda: run_active(run_args, parse_active(active_args)))
        if args[:1] == ["search"]:
            from lelp_lightning.search.study import parse_options as parse_search
            from lelp_lightning.search.study import run_search, split_search_args

            run_args, search_args = split_search_args(args[1:])
            return _resumable("search", lambda: run_search(run_args, parse_search(search_args), search_args))
        if args[:1] == ["export"]:
            from lelp_lightning.serving.export import export
            from lelp_lightning.serving.export import parse_args as parse_export

            options = parse_export(args[1:])
            card = export(options.config, options.ckpt_path, options.output, options.opset, options.bench_seconds,
                          command=shlex.join(["lelp", *args]), quantize=options.quantize)
            speed = card["speed"] and f", {card['speed']['rows_per_s']:,.0f} rows/s at batch {card['speed']['batch_size']}"
            print(f"exported to {options.output}: student.onnx ({card['onnx']['bytes'] / 2**20:.1f} MiB), test "
                  f"accuracy {100 * card['accuracy']['exported_test']:.2f}%{speed or ''}; see {options.output}/model_card.md")
            return 0
        if args[:1] == ["serve"]:
            from lelp_lightning.serving.server import parse_args as parse_serve
            from lelp_lightning.serving.server import serve

            serve(parse_serve(args[1:]))
            return 0
        build_cli(args)
        return 0
    except Exception as err:
        cause = lelp_error_behind(err)
        if cause is None:
            raise
        print(f"lelp: error: {cause}", file=sys.stderr)
        return 2


def console_main() -> None:
    sys.exit(main())
