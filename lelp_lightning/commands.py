"""The table of ``lelp`` subcommands: one class per command with its one-line description, its options (a
dataclass checked in ``__post_init__``) and its ``run`` (the model is Optuna's ``optuna/cli.py`` ``_COMMANDS``).

This module imports only the standard library and :mod:`lelp_lightning.errors` / :mod:`lelp_lightning.extras`:
``lelp --help`` answers at once, and ``lelp serve`` (whose LitServe workers import the console script again)
never imports torch or Lightning. Everything heavy is imported inside a command's ``run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lelp_lightning.errors import LelpError
from lelp_lightning.extras import require

HELP = ("-h", "--help")


# -- options: one dataclass per command, read from the command line by their fields -------------------------------

class Options:
    """Base of a command's options: a field's ``metadata`` holds its ``help``, its ``choices`` (checked here, so a
    Python caller gets the same sentence) and whether it is ``positional`` (or ``required`` in its help only)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise LelpError(f"--{f.name}: invalid choice: {getattr(self, f.name)!r}; expected one of "
                                f"{', '.join(choices)}.")


@dataclass
class ExportOptions(Options):
    """What ``lelp export`` reads and writes."""

    config: Path = field(metadata={"help": "the run's config (<run>/config.yaml)"})
    ckpt_path: Path = field(metadata={"help": "its checkpoint (<run>/checkpoints/last.ckpt)"})
    output: Path = field(metadata={"help": "the export folder: student.onnx, its featuriser, model_card.md"})
    opset: int | None = field(default=None, metadata={"help": "the ONNX opset; default: the exporter's (17)"})
    quantize: str = field(default="none", metadata={
        "choices": ("none", "int8"),
        "help": "int8: onnxruntime dynamic quantisation (smaller, faster for encoder students, less exact)"})
    bench_seconds: float = field(default=2.0, metadata={
        "help": "time for each speed measurement in the card; 0 skips them"})

    def __post_init__(self):
        super().__post_init__()
        _check(self, "export", ("opset", self.opset is None or self.opset >= 1, "an integer >= 1"),
               ("bench_seconds", self.bench_seconds >= 0, ">= 0"))


@dataclass
class ServeOptions(Options):
    """Where ``lelp serve`` listens and how much one request and one batch may hold."""

    folder: Path = field(metadata={"positional": True, "help": "the export folder (lelp export's --output)"})
    host: str = field(default="127.0.0.1", metadata={"help": "the address to listen on"})
    port: int = field(default=8000, metadata={"help": "the port to listen on (LitServe: 1024-65535)"})
    max_batch_size: int = field(default=64, metadata={"help": "requests gathered into one batch"})
    batch_timeout: float = field(default=0.005, metadata={"help": "seconds a batch waits to fill"})
    max_texts: int = field(default=256, metadata={"help": "inputs allowed in one request"})
    max_chars: int = field(default=20000, metadata={"help": "characters allowed in one text"})
    max_body_bytes: int | None = field(default=None, metadata={
        "help": "bytes allowed in one request body, refused (413) before they are read; default: "
                "2 × max_texts × max_chars + 64 KiB (about 10 MB)"})

    def __post_init__(self):
        super().__post_init__()
        _check(self, "serve", ("port", 0 <= self.port <= 65535, "in 0-65535"),
               *((name, getattr(self, name) >= 1, "an integer >= 1") for name in ("max_batch_size", "max_texts",
                                                                                   "max_chars")),
               ("max_body_bytes", self.max_body_bytes is None or self.max_body_bytes >= 1, "an integer >= 1"),
               ("batch_timeout", self.batch_timeout >= 0, "seconds >= 0"))


def _check(options: Options, command: str, *conditions: tuple[str, bool, str]) -> None:
    """One sentence for the first option whose condition fails: ``(option, condition, what it must be)``."""
    for option, ok, expected in conditions:
        if not ok:
            raise LelpError(f"lelp {command} --{option} must be {expected}, got {getattr(options, option)}.")


def _usage(command: str, cls: type) -> str:
    words = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            words.append(f"<{f.name}>")
        elif f.default is dataclasses.MISSING:
            words.append(f"--{f.name} {f.name.upper()}")
        else:
            words.append(f"[--{f.name} {f.name.upper()}]")
    return f"lelp {command} {' '.join(words)}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise LelpError(f"{self.prog}: {message}; usage: {self.usage}.")


def parse_options(command: str, cls: type, args: list[str]):
    """``args`` as an instance of the dataclass ``cls``: a field is ``--<name> <value>`` (or, marked ``positional``,
    a bare value), of its annotated type; a wrong one is one sentence with the command's usage."""
    parser = _Parser(prog=f"lelp {command}", usage=_usage(command, cls), add_help=False)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=kind)
        else:
            required = f.default is dataclasses.MISSING
            parser.add_argument(f"--{f.name}", type=kind, required=required, default=None if required else f.default)
    return cls(**vars(parser.parse_args(args)))


# -- help: a command's own options, from its dataclass's fields ---------------------------------------------------

def option_rows(cls: type, prefix: str) -> list[tuple[str, str, object, str]]:
    """(flag, type, default, help) of each option of the dataclass ``cls``: its fields that are set on the command
    line (``init``), their ``help``, ``choices`` and ``required`` metadata (``required``: one the command cannot
    run without although its default stands in for it, such as ``lelp search``'s ``--search.space``)."""
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            text += f" (one of {', '.join(f.metadata['choices'])})"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.metadata.get("required"):
            default = dataclasses.MISSING
        flag = f"<{f.name}>" if f.metadata.get("positional") else f"{prefix}{f.name}"
        rows.append((flag, _type_name(f.type), default, text))
    return rows


def _type_name(annotation) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def options_help(cls: type, prefix: str) -> str:
    """One entry per option: ``<flag>  <type>  (default: …)`` and its help on the next line."""
    lines = []
    for flag, kind, default, text in option_rows(cls, prefix):
        required = default is dataclasses.MISSING
        lines.append(f"  {flag}  {kind}  ({'required' if required else f'default: {default}'})")
        if text:
            lines.append(f"      {text}")
    return "\n".join(lines)


# -- the commands -------------------------------------------------------------------------------------------------

class Command:
    """One ``lelp`` subcommand. ``runs_models``: it imports the plugins (their classes work by short name) and
    quiets Lightning's notices before it starts; ``resumable``: Ctrl-C ends it with status 130 and says the same
    command resumes it."""

    description = ""
    runs_models = True
    resumable = False

    def help(self, name: str) -> str | None:
        """The command's own help (None: the command prints its own on ``--help``)."""
        return f"usage: lelp {name}\n\n{self.description}"

    def run(self, name: str, args: list[str]) -> int:
        raise NotImplementedError


class Run(Command):
    """fit / validate / test / predict: LightningCLI's own subcommands, its own help."""

    def __init__(self, description: str):
        self.description = description

    def help(self, name: str) -> None:
        return None

    def run(self, name: str, args: list[str]) -> int:
        from lelp_lightning.runs import build_cli

        build_cli([name, *args])
        return 0


class Cache(Command):
    description = ("run the teacher into the cache ahead of time (--trainer.strategy ddp: several processes; "
                   "--export <file>: then write its outputs to a file, docs/teachers.md)")

    def help(self, name: str) -> None:
        print("usage: lelp cache [--export <file>] <run options>\n\n  --export <file>: after the cache is built, write "
              "the teacher's outputs of every split to a new .parquet, .jsonl, .csv or .npz file (docs/teachers.md)"
              "\n")  # then the run options, printed by LightningCLI

    @staticmethod
    def export_option(args: list[str]) -> tuple[str | None, list[str]]:
        """(the file of ``--export <file>`` or ``--export=<file>``, or None; the other arguments)."""
        export, rest, words = None, [], iter(args)
        for word in words:
            if word == "--export":
                export = next(words, None)
                if export is None or export.startswith("--"):
                    raise LelpError("lelp cache --export needs a file name (.parquet, .jsonl, .csv or .npz).")
            elif word.startswith("--export="):
                export = word.partition("=")[2]
            else:
                rest.append(word)
        return export, rest

    def run(self, name: str, args: list[str]) -> int:
        import sys

        from lelp_lightning.cache.export import check_fresh_export_path, export_teacher_outputs
        from lelp_lightning.cache.teacher_pass import PassStopped, build_teacher_cache
        from lelp_lightning.core import SPLITS
        from lelp_lightning.runs import build_cli

        export, args = self.export_option(args)
        if export is not None:
            check_fresh_export_path(export)  # before the teacher runs
        cli = build_cli(args, run=False, save_config=False)  # a run's config belongs in its run folder
        try:
            build_teacher_cache(cli.trainer, cli.datamodule.plan)  # Lightning predict over the trainer's processes
        except PassStopped as stop:  # SIGTERM, at a block boundary: 128 + 15, as a shell reports a kill
            if cli.trainer.is_global_zero:
                print(f"lelp: {stop}", file=sys.stderr)
            return 143
        if not cli.trainer.is_global_zero:
            return 0
        for split in ("train", "val", "test"):
            entry = cli.datamodule.split_cache(split)
            print(f"{split}: {len(entry)} rows, embedding {entry.embedding.shape[1]}-d, cached at {entry.path}")
        if export is not None:
            data = cli.datamodule
            written = export_teacher_outputs(export, data.source, {s: data.split_cache(s) for s in SPLITS})
            print(f"the teacher's outputs of every split written to {', '.join(map(str, written))}")
        return 0


class Registered(Command):
    """A listing of a registry: its names, classes and descriptions (plugins included)."""

    def __init__(self, module: str, registry: str, description: str):
        self.module, self.registry, self.description = module, registry, description

    def run(self, name: str, args: list[str]) -> int:
        import importlib

        registry = getattr(importlib.import_module(self.module), self.registry)
        width = max(len(n) for n in registry.names())
        print("\n".join(f"{e.name:<{width}}  {e.cls.__name__:<28} {e.description}" for e in registry.entries()))
        return 0


class Group(Command):
    """tune / search / active: a run's own arguments plus a group of ``--<group>.<name>`` options (or a
    ``--<group> <file>`` holding them), read by the module that runs it."""

    resumable = True

    def __init__(self, module: str, options: str, run: str, description: str, extra: tuple[str, str] | None,
                 usage: str = ""):
        self.module, self.options, self.runner, self.description = module, options, run, description
        self.extra, self.usage = extra, usage

    def _module(self, name: str):
        import importlib

        if self.extra:
            require(self.extra[0], self.extra[1], f"lelp {name}")
        return importlib.import_module(self.module)

    def help(self, name: str) -> str:
        cls = getattr(self._module(name), self.options)
        return (f"usage: lelp {name} {self.usage}[--{name} <file>] [--{name}.<option> <value> ...] <run options>\n\n"
                f"{self.description}\n\n"
                f"{name} options (--{name}.<option> <value>, or a --{name} <file> holding them):\n"
                f"{options_help(cls, f'--{name}.')}\n\n"
                f"The run options are those of lelp fit (--config <file>, --data.*, --model.*, --trainer.*): "
                f"`lelp fit --help` lists them.")

    def run(self, name: str, args: list[str]) -> int:
        module = self._module(name)
        run_args, group_args = getattr(module, f"split_{name}_args")(args)
        options = module.parse_options(group_args)
        given = (group_args,) if name == "search" else ()  # a search records its options as given
        getattr(module, self.runner)(run_args, options, *given)
        return 0


class OwnOptions(Command):
    """A command whose options are all its own (a dataclass)."""

    options: type

    def help(self, name: str) -> str:
        return (f"usage: {_usage(name, self.options)}\n\n{self.description}\n\noptions:\n"
                f"{options_help(self.options, '--')}")


class Export(OwnOptions):
    description = "export a run's student to ONNX with its featuriser and a model card (docs/serving.md)"
    options = ExportOptions

    def run(self, name: str, args: list[str]) -> int:
        options = parse_options(name, ExportOptions, args)
        require("onnx", "serve", "lelp export")
        require("onnxruntime", "serve", "lelp export")
        from lelp_lightning.serving.export import OPSET, export

        card = export(options.config, options.ckpt_path, options.output, options.opset or OPSET,
                      options.bench_seconds, command=shlex.join(["lelp", name, *args]), quantize=options.quantize)
        speed = card["speed"] and f", {card['speed']['rows_per_s']:,.0f} rows/s at batch {card['speed']['batch_size']}"
        print(f"exported to {options.output}: student.onnx ({card['onnx']['bytes'] / 2**20:.1f} MiB), test "
              f"accuracy {100 * card['accuracy']['exported_test']:.2f}%{speed or ''}; "
              f"see {options.output}/model_card.md")
        return 0


class Serve(OwnOptions):
    description = "serve an exported student over HTTP, JSON in and out, without torch (docs/serving.md)"
    options = ServeOptions
    runs_models = False

    def run(self, name: str, args: list[str]) -> int:
        options = parse_options(name, ServeOptions, args)
        require("litserve", "serve", "lelp serve")
        require("onnxruntime", "serve", "lelp serve")
        from lelp_lightning.serving.server import serve

        serve(**dataclasses.asdict(options))
        return 0


COMMANDS: dict[str, Command] = {
    "fit": Run("train a student from a config, then test it and write summary.json"),
    "validate": Run("evaluate a checkpoint on the validation split"),
    "test": Run("evaluate a checkpoint on the test split"),
    "predict": Run("write a checkpoint's predictions (predictions.csv)"),
    "cache": Cache(),
    "tune": Group("lelp_lightning.tune.study", "TuneOptions", "run_study", extra=("optuna", "tune"),
                  description="an Optuna study over strategies, objectives and their settings (docs/tune.md)"),
    "search": Group("lelp_lightning.search.study", "SearchOptions", "run_search", extra=("optuna", "tune"),
                    usage="--search.space <file> ",
                    description="search the student's architecture with LayerNAS (docs/search.md)"),
    "active": Group("lelp_lightning.active.loop", "ActiveOptions", "run_active", extra=None,
                    description="distil on a budget of teacher queries picked round by round (docs/active.md)"),
    "export": Export(),
    "serve": Serve(),
    "strategies": Registered("lelp_lightning.strategies", "strategies", "list the registered subclass strategies"),
    "objectives": Registered("lelp_lightning.objectives", "objectives", "list the registered objectives"),
    "students": Registered("lelp_lightning.students", "students", "list the registered students"),
    "teachers": Registered("lelp_lightning.teachers", "teachers", "list the registered teachers"),
    "selectors": Registered("lelp_lightning.active", "selectors", "list the registered selectors of lelp active"),
}


def overview() -> str:
    """``lelp --help``: every command with its one line."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {command.description}" for name, command in COMMANDS.items())
    return (f"usage: lelp <command> [options]\n\nDistil a large teacher classifier into a small student (LELP).\n\n"
            f"commands:\n{rows}\n\n`lelp <command> --help` describes a command's options.")
