"""One ``lelp fit`` in this process: the LightningCLI subclass, its argument parser and the run summary.

``lelp_lightning.cli`` (the console script) runs fits through :func:`build_cli` / :func:`fit`; the outer loops
(``lelp tune``, ``lelp search``, ``lelp active``) run theirs through :mod:`lelp_lightning.runlayer`, which builds
on these. The summary and the predictions are written atomically (:mod:`lelp_lightning.fileio`).
"""

from __future__ import annotations

import gc
import inspect
import json
import logging
import re
import sys
import time
import warnings
from collections.abc import Container
from pathlib import Path

import pandas as pd
import torch
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lelp_lightning.checkpoints import check_ckpt_option
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.errors import LelpError, lelp_error_behind
from lelp_lightning.fileio import atomic_write_file, atomic_write_json
from lelp_lightning.loggers import AutoWandbLogger  # noqa: F401  (imported so configs name it bare)
from lelp_lightning.module import DistillModule, check_optimiser_options
from lelp_lightning.objectives import objectives
from lelp_lightning.registry import load_plugins, resolve_short_names
from lelp_lightning.strategies import strategies
from lelp_lightning.students import students
from lelp_lightning.teachers import teachers

# options that take a registered class, with the subcommand that describes the choices
_REGISTERED = {"data.strategy": (strategies, "strategies"), "model.objectives": (objectives, "objectives"),
               "model.student": (students, "students"), "data.teacher": (teachers, "teachers")}
_NAMED_LOGGERS = ("CSVLogger", "TensorBoardLogger")  # a run of either lands in <save_dir>/<name>/version_N
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_GIVEN_CLASS = re.compile(r"(?:Expected a dot import path string: |Problem with given class_path '|Import path )"
                          r"([^\s':]+)")


def subcommand_keys() -> set[str]:
    """The top-level config keys that only a subcommand's own method takes (``ckpt_path``, ``weights_only``,
    ``verbose``, ``return_predictions``): those of ``Trainer.fit`` / ``validate`` / ``test`` / ``predict``."""
    from lightning.pytorch import Trainer

    return {name for command, skip in LightningCLI.subcommands().items()
            for name in inspect.signature(getattr(Trainer, command)).parameters if name not in skip | {"self"}}


def run_sections(values: dict, accepted: Container[str] = ()) -> dict:
    """A run config's top level ``values`` without the subcommand-only keys (:func:`subcommand_keys`) that are
    not ``accepted``: what a command without a subcommand (``lelp cache``, ``tune``, ``search``, ``active``,
    ``export``) reads of a config that ``lelp fit`` printed or saved."""
    dropped = subcommand_keys().difference(accepted)
    return {key: value for key, value in values.items() if key not in dropped}


class LelpArgumentParser(LightningArgumentParser):
    """Resolves registered short names (``class_path: kmeans``) to their classes' import paths, and turns
    jsonargparse's long usage error for an unknown strategy / objective / student into one line naming the
    valid short names."""

    def __init__(self, *args, **kwargs):
        resolve_short_names()  # before any value is parsed; see lelp_lightning.registry
        super().__init__(*args, **kwargs)

    def parse_string(self, content: str, *args, **kwargs):
        """A config file (``--config``) without the keys of another subcommand's own method that this parser
        does not take: a config ``lelp fit`` printed or saved (its ``ckpt_path``, ``weights_only``) is read by
        ``lelp cache``, ``tune``, ``search`` and ``active``, whose run parser has no subcommand."""
        try:
            values = yaml.safe_load(content)
        except yaml.YAMLError:
            values = None  # jsonargparse says what is wrong with it
        if isinstance(values, dict):
            kept = run_sections(values, {action.dest for action in self._actions})
            if len(kept) < len(values):
                content = yaml.safe_dump(kept, sort_keys=False)
        return super().parse_string(content, *args, **kwargs)

    def parse_args(self, args=None, *rest, **kwargs):
        _GIVEN_ARGS[:] = sys.argv[1:] if args is None else args  # where error() finds the config files
        return super().parse_args(args, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        """One line on stderr and exit 2, without the usage: ``lelp: error: <file>: <what>`` for a mistake in a
        config file (a key it may not have, broken YAML), the registered names for an unknown short name."""
        if not self.exit_on_error:
            super().error(message, ex)
        key, given = _PARSER_KEY.match(message), _GIVEN_CLASS.search(message)
        if key and given and key.group(1) in _REGISTERED:
            registry, command = _REGISTERED[key.group(1)]
            print(f"lelp: error: {key.group(1)}: {given.group(1)!r} is not a known {registry.kind}; valid "
                  f"{registry.kind} names: {', '.join(registry.names())} (or a full class path; `lelp {command}` "
                  "describes them).", file=sys.stderr)
            sys.exit(2)
        cause = lelp_error_behind(ex)
        print(f"lelp: error: {cause if cause is not None else parse_error_line(message, _GIVEN_ARGS)}",
              file=sys.stderr)
        sys.exit(2)


_GIVEN_ARGS: list[str] = []  # the arguments the last LelpArgumentParser.parse_args read
_UNKNOWN_KEY = re.compile(r"Option '([^']+)' is not accepted|Group '([^']+)' does not accept option '([^']+)'"
                          r"|Subcommand '[^']+' does not accept option '([^']+)'")


def parse_error_line(message: str, args: list[str]) -> str:
    """jsonargparse's parse error as one line; a mistake in one of the config files among ``args`` names it:
    ``<file>: not valid YAML: <problem> (line L, column C).`` or ``<file>: <what jsonargparse says>``."""
    text = " ".join(message.split())
    keys = {".".join(part for part in found if part) for found in _UNKNOWN_KEY.findall(message)}
    for arg in args:
        path = Path(arg.split("=", 1)[-1])
        if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            return f"{path}: not valid YAML: {getattr(err, 'problem', None) or err}{where}."
        except (OSError, UnicodeDecodeError):
            continue
        if any(name == key or name.endswith(f".{key}") for name in _dotted_keys(values) for key in keys):
            return f"{path}: {text}"
    return text


def _dotted_keys(values, prefix: str = ""):
    """Every key of a loaded YAML document as a dotted path (list items add no part)."""
    if isinstance(values, dict):
        for key, value in values.items():
            yield f"{prefix}{key}"
            yield from _dotted_keys(value, f"{prefix}{key}.")
    elif isinstance(values, list):
        for value in values:
            yield from _dotted_keys(value, prefix)


def run_name(data, configs) -> str:
    """A run's name: its data file's stem (a source with a ``path``, such as TextFile's), else the stem of its
    first ``--config`` file, else ``run``. ``data``: the run's ``data`` config; ``configs``: its ``--config``
    files."""
    source = data.get("source") or {}
    path = (source.get("init_args") or {}).get("path") if hasattr(source, "get") else None
    if isinstance(path, str) and path:
        return Path(path).stem
    return Path(str(configs[0])).stem if configs else "run"


def name_loggers(config, name: str, unnamed_only: bool = False) -> None:
    """Name the CSV / TensorBoard loggers of ``config`` (a run's parsed config) ``name``; ``unnamed_only``: only
    those whose name is null."""
    loggers = config.get("trainer.logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init = logger.get("init_args") if hasattr(logger, "get") else None
        if (init is not None and "name" in init and not (unnamed_only and init["name"] is not None)
                and str(logger.get("class_path")).endswith(_NAMED_LOGGERS)):
            init["name"] = name


def table_width(data: DistillDataModule) -> int | None:
    """The width of the table a student starts from that the run's featuriser built (the static featuriser's
    distilled table), or None for a featuriser without one."""
    featurizer = data.featurizer
    return featurizer.embedding_dim if hasattr(featurizer, "initial_table") else None


class LelpCLI(LightningCLI):
    """Links sizes from data to model, and after ``fit`` tests the final weights and writes ``summary.json``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_subclasses", "model.num_subclasses", apply_on="instantiate")
        parser.link_arguments("data.num_outputs", "model.student.init_args.num_outputs", apply_on="instantiate")
        parser.link_arguments("data.input_dim", "model.student.init_args.input_dim", apply_on="instantiate")
        # a student with a table_dim (the static student) gets its featuriser's table width; jsonargparse skips the
        # link for a student without that option
        parser.link_arguments("data", "model.student.init_args.table_dim", compute_fn=table_width,
                              apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path`` here, first of all; before it does: the file is checked with a safe
        load (one sentence for a missing file, a non-checkpoint, or one that would run code), and every later
        load of it is ``weights_only=True``, never code from a pickle."""
        config = self.config.get(self.config.get("subcommand") or "", None)
        if config is not None and "weights_only" in config:
            check_ckpt_option(config.get("ckpt_path"), config.get("weights_only"),
                              "a .ckpt file a `lelp fit` run wrote (<run>/checkpoints/last.ckpt)")
            config["weights_only"] = True
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """A CSV / TensorBoard logger without a name (the quickstart's) is named :func:`run_name`: runs on a data
        file land in ``runs/<file stem>/``; the run's saved config.yaml records the name."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        refuse_what_cannot_train(config)  # known at parse time: before the data is read or the teacher runs
        name_loggers(config, run_name(config.get("data") or {}, config.get("config") or []), unnamed_only=True)

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()
        ckpt_path = self.config.get("fit.ckpt_path")
        if ckpt_path:  # a new run folder (CSVLogger would delete the metrics of the checkpoint's): say which
            log_dir = self.trainer.log_dir or "."  # a broadcast under DDP: every process asks
            if self.trainer.is_global_zero:
                print(f"resuming {ckpt_path}; this run writes to {log_dir}")

    def after_fit(self) -> None:
        fit_seconds = time.perf_counter() - self._fit_started
        results = self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        student = {k.split("/", 1)[1]: float(v) for k, v in (results[0] if results else {}).items()}
        reference = self.datamodule.teacher_metrics("test")
        summary = {
            "student": {"test_accuracy": student.get("accuracy"), "test_macro_f1": student.get("macro_f1")},
            "teacher": {"test_accuracy": reference["teacher_accuracy"], "test_macro_f1": reference["teacher_macro_f1"]},
            "majority_class_rate": reference["majority_class_rate"],
            "strategy": self.datamodule.targets.report("test"),
            "subclasses": self.datamodule.subclass_report("train"),
            "fit_seconds": round(fit_seconds, 2),
            "epochs": self.trainer.current_epoch,
            "config": json.loads(json.dumps(self.config.get("fit", self.config).as_dict(), default=str)),
        }
        collapsed = collapse_warning(getattr(self.model, "test_prediction_counts", None),
                                     self.datamodule.source.class_names, self.model.lr,
                                     len(self.datamodule.source.split("train")))
        summary["warnings"] = [collapsed] if collapsed else []
        self.summary = summary
        run_dir = Path(self.trainer.log_dir or ".")  # a broadcast under DDP: every process asks
        if self.trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "summary.json", summary, indent=2)
            print(format_summary(summary, run_dir / "summary.json"))
            for warning in summary["warnings"]:
                log.warning("warning: %s", warning)


    def after_predict(self) -> None:
        """Write the predictions (row id, predicted class, class probabilities) next to the run's logs."""
        batches = [{k: v.cpu() for k, v in b.items()} for b in self.trainer.predict_loop.predictions or []]
        run_dir = Path(self.trainer.log_dir or ".")  # a broadcast under DDP: every process asks
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # rank r holds shard r
            shards: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(shards, batches)
            batches = [b for shard in shards for b in shard]
        if not batches or not self.trainer.is_global_zero:
            return
        row_id = torch.cat([b["row_id"] for b in batches]).numpy()
        pred = torch.cat([b["prediction"] for b in batches]).numpy()
        probs = torch.cat([b["probabilities"] for b in batches]).numpy()
        names = self.datamodule.source.class_names
        frame = pd.DataFrame({"row_id": row_id, "prediction": [names[i] for i in pred]})
        for c, name in enumerate(names):
            frame[f"p_{name}"] = probs[:, c]
        out = run_dir / "predictions.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_file(out, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"{len(frame)} predictions written to {out}")


def refuse_what_cannot_train(config) -> None:
    """The options of a run's ``config`` that cannot train: the learning rate and weight decay, a fit of no
    epochs or steps (one sentence each, before any data work)."""
    check_optimiser_options(config.get("model.lr", 1e-3), config.get("model.weight_decay", 0.0))
    check_training_length(config.get("trainer.max_epochs"), config.get("trainer.max_steps", -1))


def check_training_length(max_epochs: int | None, max_steps: int | None) -> None:
    """A fit needs at least one epoch and one step: 0 would report an untrained student as the result."""
    if max_epochs is not None and not (max_epochs >= 1 or max_epochs == -1):
        raise LelpError(f"trainer.max_epochs must be >= 1 (or -1: no epoch limit, with max_steps or max_time to end "
                        f"the fit), got {max_epochs}.")
    if max_steps is not None and not (max_steps >= 1 or max_steps == -1):
        raise LelpError(f"trainer.max_steps must be >= 1 (or -1: no step limit), got {max_steps}.")


log = logging.getLogger(__name__)


def collapse_warning(counts: list[int] | None, class_names: list[str], lr: float, train_rows: int) -> str | None:
    """The warning for a student that gave every test row one class (``counts``: test rows per predicted class),
    with its usual cause; ``None`` for a student that predicts several classes."""
    if not counts or sum(1 for n in counts if n) != 1:
        return None
    only = next(c for c, n in enumerate(counts) if n)
    return (f"the student predicts only {class_names[only]!r} on the test split (all {counts[only]} rows); the "
            f"usual cause is a learning rate too high for this few training rows ({train_rows}), or too few epochs: "
            f"try --model.lr {lr / 10:g} (this run's is {lr:g}) or a larger --trainer.max_epochs.")


def format_summary(summary: dict, path: Path) -> str:
    rows = [("student", summary["student"]["test_accuracy"], summary["student"]["test_macro_f1"]),
            ("teacher", summary["teacher"]["test_accuracy"], summary["teacher"]["test_macro_f1"]),
            ("majority class", summary["majority_class_rate"], None)]
    lines = ["", f"{'test split':<16}{'accuracy':>10}{'macro-F1':>10}"]
    for name, acc, f1 in rows:
        lines.append(f"{name:<16}{100 * acc:>9.2f}%" + (f"{100 * f1:>9.2f}%" if f1 is not None else f"{'':>10}"))
    for name, entry in summary.get("subclasses", {}).items():
        if len(entry["sizes"]) > 1:
            agreement = (f", NMI {entry['nmi']:.2f} with its {entry['fine_labels']} fine labels"
                         if "nmi" in entry else "")
            lines.append(f"class {name}: pseudo-subclass sizes {entry['sizes']}{agreement}")
    lines += [f"warning: {warning}" for warning in summary.get("warnings", [])]
    lines.append(f"fit took {summary['fit_seconds']:.1f} s; summary written to {path} "
                 "(pseudo-subclasses: 'subclasses')")
    return "\n".join(lines)


def fit(args: list[str]) -> dict:
    """``lelp fit`` with ``args`` in this process, returning its summary (what ``summary.json`` holds).

    Many fits in a row (a search, a tuning study) pay the import and startup once; each fit's trainer, model
    and data module are released before the next starts. Bad input raises :class:`LelpError`.
    """
    hide_notices_a_user_cannot_act_on(new_command=False)
    load_plugins()
    cli = build_cli(["fit", *args])
    summary = cli.summary
    wandb = sys.modules.get("wandb")  # imported only where a W&B logger is configured
    if wandb is not None and wandb.run is not None:  # else the next fit would log into this fit's run
        wandb.finish()
    del cli
    gc.collect()
    return summary


def build_cli(args: list[str], run: bool = True, save_config: bool = True) -> LelpCLI:
    """The run of ``args``; ``save_config=False``: its trainer does not write ``config.yaml`` into its log folder
    (``lelp cache``, whose trainer logs nothing: the folder would be the working folder)."""
    from lightning.pytorch.cli import SaveConfigCallback

    return LelpCLI(DistillModule, DistillDataModule, args=args, run=run, save_config_kwargs={"overwrite": True},
                   parser_class=LelpArgumentParser, save_config_callback=SaveConfigCallback if save_config else None)


def _not_a_cloud_logger_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip: For seamless cloud logging")


_CACHE_HITS_SAID: set[str] = set()
_SAID_ONCE = ("The number of training batches",)  # Lightning's "fewer batches than the logging interval"
_WARNINGS_SAID: set[str] = set()


def _once_per_process(show):
    """``show`` (a ``warnings.showwarning``) that shows a warning starting with one of ``_SAID_ONCE`` once per
    process. Not a warnings filter: ``"once"`` is forgotten whenever the filters change, which every fit does."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text.startswith(_SAID_ONCE):
            if text in _WARNINGS_SAID:
                return None
            _WARNINGS_SAID.add(text)
        return show(message, category, filename, lineno, file, line)

    showwarning.lelp_once = True
    return showwarning


def _a_cache_hit_once(record: logging.LogRecord) -> bool:
    """"teacher cache hit ..." once per process and cache folder: a study's trials all hit the same cache."""
    if not record.getMessage().startswith("teacher cache hit"):
        return True
    said = record.getMessage() in _CACHE_HITS_SAID
    _CACHE_HITS_SAID.add(record.getMessage())
    return not said


def hide_notices_a_user_cannot_act_on(new_command: bool = True) -> None:
    """Lightning's notices that say nothing about this run: its advice for ``args`` in a script (we are the
    script), its own internal use of a deprecated torch pytree API, and an advertisement for its cloud logger.
    Its notice that an epoch has fewer batches than the logging interval, and lelp's "teacher cache hit", are said
    once per command (a process: ``new_command``, as the console script's ``main`` calls it), not once per fit: a
    study's trials all have the same batches and cache. Safe to call again (``fit`` does, per run, with
    ``new_command=False``): an identical filter is not added twice."""
    if new_command:
        _WARNINGS_SAID.clear()
        _CACHE_HITS_SAID.clear()
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    if not getattr(warnings.showwarning, "lelp_once", False):  # a catch_warnings block may have put back another
        warnings.showwarning = _once_per_process(warnings.showwarning)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_cloud_logger_tip)
    for name in ("lelp_lightning.cache.plan", "lelp_lightning.cache.teacher_pass"):
        logging.getLogger(name).addFilter(_a_cache_hit_once)


def split_group_args(args: list[str], group: str) -> tuple[list[str], list[str]]:
    """(the run's own arguments, the ``--<group>`` / ``--<group>.<name>`` ones with their values)."""
    run, options, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == f"--{group}" or arg.startswith((f"--{group}.", f"--{group}=")):
            takes_value = "=" not in arg and i + 1 < len(args)
            options += args[i:i + 1 + takes_value]
            i += 1 + takes_value
        else:
            run.append(arg)
            i += 1
    return run, options


def parse_group_options(cls: type, group: str, args: list[str]):
    """``args`` (``--<group> <file>``, ``--<group>.<name> <value>``) as an instance of ``cls``; a wrong one is
    one sentence naming the valid options."""
    from jsonargparse import ArgumentParser

    resolve_short_names()  # registered short names (``--active.selector rad``) resolve as in run configs
    parser = ArgumentParser(prog=f"lelp {group}", exit_on_error=False)
    parser.add_class_arguments(cls, group)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(parser.instantiate_classes(parser.parse_args(args)), group)
    except Exception as err:
        cause = lelp_error_behind(err)
        if cause is not None:
            raise cause from None
        names = ", ".join(f"--{group}.{n}" for n in inspect.signature(cls).parameters)
        raise LelpError(f"{group} options: {str(err).splitlines()[0]}; valid: --{group} <file>, {names}.") from None


def flat_config(cli: LelpCLI, leave_out: tuple[str, ...] = ()) -> dict:
    """The run's resolved config as ``{"data.batch_size": 128, ...}`` (a class's ``{class_path, init_args}`` kept
    whole), without the keys that start with one of ``leave_out``: what ties a study or an active run to its config."""
    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict) and "class_path" not in value:
                out |= flat(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value
        return out

    config = flat(json.loads(json.dumps(cli.config.as_dict(), default=str)))
    return {k: v for k, v in config.items() if not k.startswith(leave_out)}
