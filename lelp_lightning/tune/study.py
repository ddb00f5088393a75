"""``lelp tune``: an Optuna study whose every trial is a real ``lelp fit`` on the cached teacher outputs.

The teacher runs once, before the first trial (:meth:`Base.prepare`); each trial picks a method and its parameters
from the :class:`~lelp_lightning.tune.space.SearchSpace`, trains, reports validation accuracy after every epoch
and is pruned through optuna-integration's Lightning callback when it is clearly losing. The study lives in an
Optuna storage (SQLite next to the runs by default; any RDB URL or ``journal:<file>`` lets many processes on
many machines share it). A trial's budget counts finished trials only (complete or pruned): a trial that fails
or is killed is redone, never counted. When the budget is met the report is written and the best configuration
is refit and tested (:mod:`~lelp_lightning.tune.report`); the test split is read only there.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lelp_lightning.core import FINAL
from lelp_lightning.errors import LelpError
from lelp_lightning.runs import build_cli, flat_config, parse_group_options, split_group_args
from lelp_lightning.tune.report import is_confirmation, locked, method_params, top_trials, trial_value, write_report
from lelp_lightning.tune.space import SearchSpace

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# options a trial sets itself: left out of the fingerprint that ties a study to its base config
_TRIAL_OWNED = ("trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar",
                "trainer.enable_model_summary", "data.progress")


class TuneOptions:
    """What ``lelp tune`` searches and where the study lives (``--tune.<name>`` or a ``--tune <file>``).

    Args:
        space: the search space: a YAML file, or the mapping itself (default: the package's
            ``default_space.yaml``, every registered strategy and objective).
        n_trials: the study's budget of finished trials (complete or pruned), shared by every process.
        methods / exclude: search only these methods / leave these out (names of the space's methods).
        root / study_name: the study's folder is ``root/study_name`` (default name: the first ``--config``'s
            file stem); it holds the trials' logs, the report, ``best.yaml`` and the refits.
        storage: an Optuna storage URL (``sqlite:///…``, ``postgresql://…``, ``mysql://…``) or ``journal:<file>``;
            default ``sqlite:///<study folder>/study.db``.
        seeds: how many seeds the best configuration is refit and tested with (0: no refit).
        seed: the default sampler's seed (the process that creates the study; a process joining it samples with
            a fresh seed, so that workers do not repeat each other).
        sampler / pruner: any Optuna sampler / pruner (default: multivariate grouped TPE; a median pruner
            that waits for 5 finished trials and 1 epoch).
        monitor: the metric trials are ranked and pruned on (maximised).
        heartbeat_interval / grace_period: seconds; an RDB storage marks a trial failed once its process has not
            beaten for ``grace_period`` (a killed worker), and the trial is redone once.
        max_failures: stop after this many failed trials in a row (a space whose every trial fails).
        confirm_top / confirm_seeds: once the budget is met, the ``confirm_top`` best trials are each run again
            with ``confirm_seeds`` more seeds (validation only, never pruned, outside the budget) and the best is
            the one with the highest mean validation accuracy over its runs: on a small validation split the
            single best run of many is partly luck. 0 (the default): the best single run.
        progress: the progress bar over trials.
    """

    def __init__(self, space: str | dict | None = None, n_trials: int = 40, methods: list[str] | None = None,
                 exclude: list[str] | None = None, root: str = "runs/tune", study_name: str | None = None,
                 storage: str | None = None, seeds: int = 3, seed: int = 0,
                 sampler: optuna.samplers.BaseSampler | None = None, pruner: optuna.pruners.BasePruner | None = None,
                 monitor: str = "val/accuracy", heartbeat_interval: int = 10, grace_period: int = 30,
                 max_failures: int = 5, confirm_top: int = 0, confirm_seeds: int = 2, progress: bool = True):
        if n_trials < 1 or seeds < 0 or heartbeat_interval < 1 or grace_period <= heartbeat_interval \
                or max_failures < 1 or confirm_top < 0 or confirm_seeds < 0:
            raise LelpError(f"tune options need n_trials >= 1, seeds >= 0, heartbeat_interval >= 1, grace_period > "
                            f"heartbeat_interval, max_failures >= 1, confirm_top >= 0 and confirm_seeds >= 0; got "
                            f"n_trials={n_trials}, seeds={seeds}, heartbeat_interval={heartbeat_interval}, "
                            f"grace_period={grace_period}, max_failures={max_failures}, confirm_top={confirm_top}, "
                            f"confirm_seeds={confirm_seeds}.")
        self.space, self.n_trials, self.methods, self.exclude = space, n_trials, methods, list(exclude or [])
        self.root, self.study_name, self.storage = root, study_name, storage
        self.seeds, self.seed, self.sampler, self.pruner, self.monitor = seeds, seed, sampler, pruner, monitor
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.max_failures, self.progress = max_failures, progress
        self.confirm_top, self.confirm_seeds = confirm_top, confirm_seeds

    def load_space(self) -> SearchSpace:
        if isinstance(self.space, dict):
            space = SearchSpace.from_dict(self.space)
        else:
            space = SearchSpace.load(self.space)
        return space.select(self.methods, self.exclude)


class Base:
    """The user's run (its CLI arguments) and what trials read from it, checked and cached once."""

    def __init__(self, args: list[str], options: TuneOptions):
        quiet = ["--data.progress", "false"] if not options.progress else []
        cli = build_cli([*args, *quiet], run=False)  # bad input fails here, before any study exists
        data = cli.datamodule
        representations = [FINAL, *data.teacher.representations()]
        has_fine = data.source.split("train").fine_labels is not None
        self.val_rows = len(data.source.split("val").labels)  # what a trial's value is measured on: how noisy it is
        self.space, self.dropped = options.load_space().for_data(representations, has_fine)
        self.args, self.datamodule = list(args), data
        self.lr = float(cli.config.model.lr)
        seed = cli.config.seed_everything
        self.seed = int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0
        config = flat_config(cli, _TRIAL_OWNED)
        self.fingerprint = hashlib.sha256(json.dumps([config, self.space.fingerprint()], sort_keys=True)
                                          .encode()).hexdigest()[:16]

    def prepare(self) -> None:
        """Run the teacher into the cache (every split, every representation the space reads): once per study."""
        data = self.datamodule
        data.cache.root.mkdir(parents=True, exist_ok=True)
        with open(data.cache.root / ".tune-prepare.lock", "w") as lock:  # workers of one machine: one builds, the
            fcntl.flock(lock, fcntl.LOCK_EX)  # others then find the cache complete
            data.prepare_data()
            for name in sorted(self.space.representations()):
                data.plan.build_representation(name, data.progress)
        self.datamodule = None  # trials build their own; nothing keeps this one's arrays alive


def study_folder(args: list[str], options: TuneOptions) -> tuple[Path, str]:
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    name = options.study_name or (Path(configs[0]).stem if configs else "study")
    return Path(options.root) / name, name


def make_storage(options: TuneOptions, folder: Path) -> optuna.storages.BaseStorage:
    url = options.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(3):  # workers starting together race to create the tables: the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                                  heartbeat_interval=options.heartbeat_interval,
                                                  grace_period=options.grace_period,
                                                  heartbeat_stale_trial_callback=retry)
        except Exception as err:  # SQLAlchemy's many error types for a bad URL or an unreachable database
            if type(err).__name__ == "IntegrityError" and attempt < 2:
                time.sleep(1.0 + attempt)
                continue
            raise LelpError(f"Optuna storage {url!r} could not be opened ({type(err).__name__}: "
                            f"{str(err).splitlines()[0]}); expected an Optuna RDB URL (sqlite:///file.db, "
                            "postgresql://…, mysql://…) or journal:<file>.") from err


class _Surplus(Exception):
    """A trial asked for after the budget was met by trials of other processes: never run, not a result."""


def open_study(base: Base, options: TuneOptions, folder: Path, name: str) -> optuna.Study:
    storage = make_storage(options, folder)
    pruner = options.pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            sampler = options.sampler or optuna.samplers.TPESampler(multivariate=True, group=True, seed=options.seed)
            study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                        pruner=pruner)
            for method in ("ce", "kd"):  # the baselines first: the study always measures them
                if method in base.space.methods:
                    study.enqueue_trial({"method": method}, user_attrs={"baseline": True})
            study.set_user_attr("fingerprint", base.fingerprint)  # last: a joining worker waits for it
        except optuna.exceptions.DuplicatedStudyError:
            sampler = options.sampler or optuna.samplers.TPESampler(multivariate=True, group=True)
            study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
    made_for = study.user_attrs.get("fingerprint")
    for _ in range(60):  # a worker that joins a study being created: the creator is enqueuing the baselines
        if made_for is not None:
            break
        time.sleep(0.5)
        made_for = study.user_attrs.get("fingerprint")
    if made_for != base.fingerprint:
        raise LelpError(f"study {name!r} in {options.storage or folder / 'study.db'} was made for another base config "
                        f"or search space (fingerprint {made_for}, this run's {base.fingerprint}); give this one its "
                        "own --tune.study_name or --tune.root.")
    return study


def finished(study: optuna.Study) -> int:
    """Finished search trials: what the budget counts (confirmations are outside it)."""
    return sum(not is_confirmation(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


class Objective:
    """One trial: the method and parameters it samples, trained through the CLI's own objects."""

    def __init__(self, base: Base, options: TuneOptions, folder: Path):
        self.base, self.options, self.folder = base, options, folder
        self.current: optuna.Trial | None = None

    def trial_args(self, number: int) -> list[str]:
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                  "init_args": {"save_dir": str(self.folder), "name": "trials", "version": f"trial_{number:04d}"}}
        return ["--trainer.logger", json.dumps(logger), "--trainer.enable_progress_bar", "false",
                "--trainer.enable_model_summary", "false", "--data.progress", "false",
                "--trainer.default_root_dir", str(self.folder / "trials")]

    def __call__(self, trial: optuna.Trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        confirming = is_confirmation(trial)
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                 if t.number < trial.number and not is_confirmation(t)]
        if not confirming and len(ahead) >= self.options.n_trials:
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise _Surplus(f"trial {trial.number}: the budget of {self.options.n_trials} was met by other processes")
        self.current = trial
        method, values = self.base.space.suggest(trial)
        seed = self.base.seed + int(trial.user_attrs.get("confirm_seed", 0))
        overrides = method.overrides(values, self.base.lr, seed)
        if confirming:  # the same configuration, another seed: weights, batches and the strategy's own seed
            overrides += ["--seed_everything", str(seed)]
        trial.set_user_attr("method", method.name)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("val_rows", self.base.val_rows)
        start = time.perf_counter()
        cli = build_cli([*self.base.args, *overrides, *self.trial_args(trial.number)], run=False)
        trainer = cli.trainer
        if not confirming:  # a confirmation runs to the end: its value is averaged, not compared epoch by epoch
            trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor=self.options.monitor))
        try:
            trainer.fit(cli.model, datamodule=cli.datamodule)
            value = trainer.callback_metrics.get(self.options.monitor)
            if value is None:  # the last epoch was not validated (check_val_every_n_epoch > 1)
                value = trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0][self.options.monitor]
            return float(value)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # kept beside the trial: the leaderboard says why it failed
            trial.set_user_attr("error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            raise
        finally:
            trial.set_user_attr("wall_s", round(time.perf_counter() - start, 2))
            trial.set_user_attr("epochs", trainer.current_epoch)
            if trainer.log_dir:  # a trial's weights are not kept: the best configuration is refit
                shutil.rmtree(Path(trainer.log_dir) / "checkpoints", ignore_errors=True)
            del cli, trainer
            gc.collect()


class _Budget:
    """Stops this process once the budget of finished trials is met, or after ``max_failures`` failures in a row."""

    def __init__(self, options: TuneOptions, bar):
        self.options, self.bar, self.failures = options, bar, 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_confirmation(trial):
            if trial.state == TrialState.COMPLETE:
                line = (f"trial {trial.number} confirms trial {trial.user_attrs['confirm_of']} (seed "
                        f"+{trial.user_attrs['confirm_seed']}): {trial.value:.4f}")
                (self.bar.write if self.bar is not None else print)(line)
            return
        done = finished(study)
        if self.bar is not None:
            self.bar.n = min(done, self.options.n_trials)
            self.bar.refresh()
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            self.failures += 1
            if self.failures >= self.options.max_failures:
                log.error("%d trials failed in a row (the last: trial %d); stopping.", self.failures, trial.number)
                study.stop()
        elif trial.state in FINISHED:
            self.failures = 0
            value = trial_value(trial)
            line = (f"trial {trial.number} {trial.state.name.lower()}: {trial.user_attrs.get('method')} "
                    f"{method_params(trial)} → {float('nan') if value is None else value:.4f} ({trial.user_attrs.get('wall_s', 0):.0f} s)")
            (self.bar.write if self.bar is not None else print)(line)
        if done >= self.options.n_trials:
            study.stop()


def _state(study: optuna.Study, number: int) -> TrialState:
    return next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)


def run_study(args: list[str], options: TuneOptions) -> dict:
    """The whole of ``lelp tune``: prepare the cache, search until the budget is met, then report and refit."""
    folder, name = study_folder(args, options)
    base = Base(args, options)
    for method in base.dropped:
        log.info("tune: method %r left out: its strategy needs fine labels, which this data has none of.", method)
    base.prepare()
    study = open_study(base, options, folder, name)
    objective = Objective(base, options, folder)
    bar = None
    if options.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=options.n_trials, initial=min(finished(study), options.n_trials), desc=f"tune {name}",
                   unit="trial")
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "optuna")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        if finished(study) < options.n_trials:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, callbacks=[_Budget(options, bar)], catch=(Exception,), gc_after_trial=True)
    except KeyboardInterrupt:
        current = objective.current
        if current is not None and _state(study, current.number) == TrialState.FAIL:
            # redo the interrupted trial first when the study resumes (Optuna marked it failed)
            kept = {k: v for k, v in current.user_attrs.items() if k in ("confirm_of", "confirm_seed")}
            study.enqueue_trial(current.params, user_attrs={"retry_of": current.number, **kept})
        raise
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
        if bar is not None:
            bar.close()
    done, running = finished(study), len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if done < options.n_trials:
        log.warning("tune: %d of %d trials finished, %d running (in other processes, or killed less than %d s ago); "
                    "rerun the same command to finish the study.", done, options.n_trials, running,
                    options.grace_period)
        return {"study": name, "folder": str(folder), "finished": done, "complete": False}
    confirm(study, objective, options, folder)
    return write_report(study, base, options, folder) | {"study": name, "folder": str(folder), "finished": done,
                                                          "complete": True}



def confirm(study: optuna.Study, objective: Objective, options: TuneOptions, folder: Path) -> None:
    """Run the best ``confirm_top`` search trials again with ``confirm_seeds`` more seeds each (queued once: a
    confirmation already waiting, running or complete is not queued again; a failed one is)."""
    if not options.confirm_top or not options.confirm_seeds:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder):
        trials = study.get_trials(deepcopy=False)
        queued = {(t.user_attrs["confirm_of"], t.user_attrs["confirm_seed"]) for t in trials
                  if is_confirmation(t) and t.state != TrialState.FAIL}
        for top in top_trials(study, options.confirm_top):
            for offset in range(1, options.confirm_seeds + 1):
                if (top.number, offset) not in queued:
                    study.enqueue_trial(top.params, user_attrs={"confirm_of": top.number, "confirm_seed": offset})
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if is_confirmation(t)]
    if waiting:
        log.info("tune: confirming the best %d trials with %d more seeds each (%d runs)", options.confirm_top,
                 options.confirm_seeds, len(waiting))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=len(waiting), callbacks=[_Budget(options, None)], catch=(Exception,),
                           gc_after_trial=True)


def split_tune_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(the run's own arguments, the ``--tune`` / ``--tune.<name>`` ones with their values)."""
    return split_group_args(args, "tune")


def parse_options(tune_args: list[str]) -> TuneOptions:
    """The ``--tune`` options as :class:`TuneOptions`; a wrong one is one sentence naming the valid ones."""
    return parse_group_options(TuneOptions, "tune", tune_args)
