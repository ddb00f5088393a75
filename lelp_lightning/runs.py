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
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lelp_lightning.checkpoints import check_ckpt_option
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.errors import LelpError, lelp_error_behind
from lelp_lightning.fileio import atomic_write_file, atomic_write_json
from lelp_lightning.loggers import AutoWandbLogger  # noqa: F401  (imported so configs name it bare)
from lelp_lightning.module import DistillModule
from lelp_lightning.objectives import objectives
from lelp_lightning.registry import load_plugins, resolve_short_names
from lelp_lightning.strategies import strategies
from lelp_lightning.students import students
from lelp_lightning.teachers import teachers

# options that take a registered class, with the subcommand that describes the choices
_REGISTERED = {"data.strategy": (strategies, "strategies"), "model.objectives": (objectives, "objectives"),
               "model.student": (students, "students"), "data.teacher": (teachers, "teachers")}
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_GIVEN_CLASS = re.compile(r"(?:Expected a dot import path string: |Problem with given class_path '|Import path )"
                          r"([^\s':]+)")


class LelpArgumentParser(LightningArgumentParser):
    """Resolves registered short names (``class_path: kmeans``) to their classes' import paths, and turns
    jsonargparse's long usage error for an unknown strategy / objective / student into one line naming the
    valid short names."""

    def __init__(self, *args, **kwargs):
        resolve_short_names()  # before any value is parsed; see lelp_lightning.registry
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        key, given = _PARSER_KEY.match(message), _GIVEN_CLASS.search(message)
        if self.exit_on_error and key and given and key.group(1) in _REGISTERED:
            registry, command = _REGISTERED[key.group(1)]
            print(f"lelp: error: {key.group(1)}: {given.group(1)!r} is not a known {registry.kind}; valid "
                  f"{registry.kind} names: {', '.join(registry.names())} (or a full class path; `lelp {command}` "
                  "describes them).", file=sys.stderr)
            sys.exit(2)
        super().error(message, ex)


class LelpCLI(LightningCLI):
    """Links sizes from data to model, and after ``fit`` tests the final weights and writes ``summary.json``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_subclasses", "model.num_subclasses", apply_on="instantiate")
        parser.link_arguments("data.num_outputs", "model.student.init_args.num_outputs", apply_on="instantiate")
        parser.link_arguments("data.input_dim", "model.student.init_args.input_dim", apply_on="instantiate")

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

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

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
        self.summary = summary
        run_dir = Path(self.trainer.log_dir or ".")  # a broadcast under DDP: every process asks
        if self.trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / "summary.json", summary, indent=2)
            print(format_summary(summary, run_dir / "summary.json"))


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
    lines.append(f"fit took {summary['fit_seconds']:.1f} s; summary written to {path} "
                 "(pseudo-subclasses: 'subclasses')")
    return "\n".join(lines)


def fit(args: list[str]) -> dict:
    """``lelp fit`` with ``args`` in this process, returning its summary (what ``summary.json`` holds).

    Many fits in a row (a search, a tuning study) pay the import and startup once; each fit's trainer, model
    and data module are released before the next starts. Bad input raises :class:`LelpError`.
    """
    hide_notices_a_user_cannot_act_on()
    load_plugins()
    cli = build_cli(["fit", *args])
    summary = cli.summary
    wandb = sys.modules.get("wandb")  # imported only where a W&B logger is configured
    if wandb is not None and wandb.run is not None:  # else the next fit would log into this fit's run
        wandb.finish()
    del cli
    gc.collect()
    return summary


def build_cli(args: list[str], run: bool = True) -> LelpCLI:
    return LelpCLI(DistillModule, DistillDataModule, args=args, run=run, save_config_kwargs={"overwrite": True},
                   parser_class=LelpArgumentParser)


def _not_a_cloud_logger_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip: For seamless cloud logging")


def hide_notices_a_user_cannot_act_on() -> None:
    """Lightning's notices that say nothing about this run: its advice for ``args`` in a script (we are the
    script), its own internal use of a deprecated torch pytree API, and an advertisement for its cloud logger.
    Safe to call again (``fit`` does, per run): an identical warning filter or logging filter is not added twice."""
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_cloud_logger_tip)


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
