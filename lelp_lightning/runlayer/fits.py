"""Fits an outer loop drives: a tune trial, a search candidate, an active round, the refit of the chosen one.

Each such run is named from its folder (:func:`run_folder`), logs to a CSV file beside the outer loop's own files
(:func:`logged_args`: not the config's logger, so that many runs do not each open a W&B run), is scored on a
validation metric (:func:`fit_and_score`), and leaves no checkpoint behind (:func:`drop_checkpoints`): the outer
loop keeps what it needs and trains the chosen configuration again with :func:`refit_seeds`.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import Any

from lelp_lightning.fileio import atomic_write_text
from lelp_lightning.runs import build_cli, fit, name_loggers


def run_folder(args: list[str], root: str, name: str | None = None, suffix: str = "", default: str = "run") -> Path:
    """``root/name``; without a name, the first ``--config``'s file stem (``default`` without one) and ``suffix``."""
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    return Path(root) / (name or f"{Path(configs[0]).stem if configs else default}{suffix}")


def logged_args(save_dir: Path, name: str, version: str, root_dir: Path | None = None,
                progress: bool = False) -> list[str]:
    """Overrides that log a run to ``save_dir/name/version`` with a CSV logger and no model summary; without
    ``progress``, no progress bars either. ``root_dir``: the run's ``trainer.default_root_dir``."""
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
              "init_args": {"save_dir": str(save_dir), "name": name, "version": version}}
    args = ["--trainer.logger", json.dumps(logger), "--trainer.enable_model_summary", "false"]
    if not progress:
        args += ["--trainer.enable_progress_bar", "false", "--data.progress", "false"]
    return args + (["--trainer.default_root_dir", str(root_dir)] if root_dir is not None else [])


def seed_args(seed: int) -> list[str]:
    """Overrides that give a run another seed: its weights, its batches and its strategy's own draws."""
    return ["--seed_everything", str(seed), "--data.strategy.init_args.seed", str(seed)]


def fit_and_score(trainer, model, datamodule, monitor: str) -> float:
    """Fit, then the ``monitor`` metric at the end (validated once more when the last epoch was not, as with
    ``check_val_every_n_epoch > 1``)."""
    trainer.fit(model, datamodule=datamodule)
    value = trainer.callback_metrics.get(monitor)
    if value is None:
        value = trainer.validate(model, datamodule=datamodule, verbose=False)[0][monitor]
    return float(value)


def drop_checkpoints(trainer) -> None:
    """Delete a run's Lightning checkpoints (the outer loop keeps what it needs, and refits the chosen)."""
    if trainer.log_dir:
        shutil.rmtree(Path(trainer.log_dir) / "checkpoints", ignore_errors=True)


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``: why a trial failed, in one line."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def fit_trial(args: list[str], monitor: str, record: Callable[[str, Any], None], callbacks: Iterable = (),
              measure: Callable[[Any], dict] | None = None, outcomes: tuple[type[BaseException], ...] = ()) -> float:
    """One trial's fit: the run ``args`` with the extra trainer ``callbacks``, its ``monitor`` metric at the end.

    ``record(key, value)`` (an Optuna trial's ``set_user_attr``) gets what ``measure(fitted cli)`` returns, the wall
    time (``wall_s``), the epochs trained and, for a failure, its first line (``error``); an exception in
    ``outcomes`` (a pruned trial) is a result, not an error. Bad ``args`` raise before anything is recorded. The
    run's checkpoints are deleted and its objects released, whatever happens."""
    start = time.perf_counter()
    cli = build_cli(args, run=False)
    trainer = cli.trainer
    trainer.callbacks.extend(callbacks)
    try:
        value = fit_and_score(trainer, cli.model, cli.datamodule, monitor)
        for key, measured in (measure(cli) if measure is not None else {}).items():
            record(key, measured)
        return value
    except outcomes:
        raise
    except Exception as err:
        record("error", first_line(err))
        raise
    finally:
        record("wall_s", round(time.perf_counter() - start, 2))
        record("epochs", trainer.current_epoch)
        drop_checkpoints(trainer)
        del cli, trainer
        gc.collect()


def refit_seeds(config: Path | str, seeds: int, save_dir: Path, name: str, done: Container[int],
                keep: Callable[[int, dict], None]) -> None:
    """``config`` trained and tested once per seed of ``range(seeds)`` not ``done`` (:func:`seed_args`), logged to
    ``save_dir/name/seed_<s>`` with its checkpoints kept; ``keep(seed, summary)`` records each run before the next
    starts, so a killed refit resumes at its first missing seed."""
    for seed in range(seeds):
        if seed not in done:
            keep(seed, fit(["--config", str(config), *seed_args(seed), *logged_args(save_dir, name, f"seed_{seed}")]))


def write_config(path: Path, args: list[str], header: str, name: str | None = None) -> Path:
    """The run ``args`` resolved by the CLI, written to ``path`` as a YAML config under the comment ``header``;
    ``name``: the name its CSV / TensorBoard logger gives the runs of it (``lelp fit --config best.yaml`` of a
    study lands in ``runs/<study>/``)."""
    cli = build_cli(args, run=False)
    if name is not None:
        name_loggers(cli.config, name)
    atomic_write_text(path, f"# {header}\n" + cli.parser.dump(cli.config, skip_none=False))
    del cli
    return path
