"""``lelp tune``: an Optuna study whose every trial is a real ``lelp fit`` on the cached teacher outputs.

The teacher runs once, before the first trial (:meth:`Base.prepare`); each trial picks a method and its parameters
from the :class:`~lelp_lightning.tune.space.SearchSpace`, trains, reports validation accuracy after every epoch
and is pruned through optuna-integration's Lightning callback when it is clearly losing. The study lives in an
Optuna storage (SQLite next to the runs by default; any RDB URL or ``journal:<file>`` lets many processes on
many machines share it). A trial's budget counts finished trials only (complete or pruned): a trial that fails
or is killed is redone, never counted. When the budget is met the report is written and the best configuration
is refit and tested (:mod:`~lelp_lightning.tune.report`); the test split is read only there. Before that, the
finalists are compared on folds of the training rows (:mod:`~lelp_lightning.tune.crossval`), which decides the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lelp_lightning.core import FINAL
from lelp_lightning.errors import LelpError
from lelp_lightning.fileio import locked
from lelp_lightning.runlayer.fits import fit_trial, logged_args, run_folder
from lelp_lightning.runlayer.studies import FINISHED, Owner, fail_stale, max_trials, open_storage, optimize, requeue
from lelp_lightning.runlayer.studies import open_study as open_shared_study
from lelp_lightning.runs import build_cli, flat_config, parse_group_options, split_group_args
from lelp_lightning.tune.crossval import CV_RULES, finalists, is_fold
from lelp_lightning.tune.report import is_confirmation, is_extra, method_params, top_trials, trial_value, write_report
from lelp_lightning.tune.space import SearchSpace, default_space_path, learned_space_path

log = logging.getLogger(__name__)
# options a trial sets itself: left out of the fingerprint that ties a study to its base config
_TRIAL_OWNED = ("trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar",
                "trainer.enable_model_summary", "data.progress")


@dataclass
class TuneOptions:
    """What ``lelp tune`` searches and where the study lives (``--tune.<name>`` or a ``--tune <file>``).

    Each field's ``help`` (its metadata) is what ``lelp tune --help`` shows for it.
    """

    space: str | dict = field(default="learned", metadata={
        "help": "the search space: learned (the methods and values that won on the accuracy grid's tasks), full "
                "(every registered strategy and objective), a YAML file, or the mapping itself"})
    n_trials: int = field(default=40, metadata={
        "help": "the study's budget of finished trials (complete or pruned), shared by every process"})
    methods: list[str] | None = field(default=None, metadata={
        "help": "search only these methods (names of the space's methods); default: all of them"})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "leave these methods out (names of the space's methods)"})
    root: str = field(default="runs/tune", metadata={
        "help": "the folder the study's folder <root>/<study_name> is in; it holds the trials' logs, the report, "
                "best.yaml and the refits"})
    study_name: str | None = field(default=None, metadata={
        "help": "the study's name and folder under --tune.root; default: the first --config's file stem"})
    storage: str | None = field(default=None, metadata={
        "help": "an Optuna storage URL (sqlite:///…, postgresql://…, mysql://…) or journal:<file>; "
                "default: sqlite:///<study folder>/study.db"})
    seeds: int = field(default=3, metadata={
        "help": "how many seeds the best configuration is refit and tested with (0: no refit)"})
    seed: int = field(default=0, metadata={
        "help": "the default sampler's seed (the process that creates the study; a process joining it samples "
                "with a fresh seed, so that workers do not repeat each other)"})
    sampler: optuna.samplers.BaseSampler | None = field(default=None, metadata={
        "help": "any Optuna sampler; default: multivariate grouped TPE"})
    pruner: optuna.pruners.BasePruner | None = field(default=None, metadata={
        "help": "any Optuna pruner; default: a median pruner that waits for 5 finished trials and 1 epoch"})
    monitor: str = field(default="val/accuracy", metadata={
        "help": "the metric trials are ranked and pruned on (maximised)"})
    heartbeat_interval: int = field(default=10, metadata={
        "help": "seconds between a running trial's heartbeats in an RDB storage"})
    grace_period: int = field(default=30, metadata={
        "help": "seconds without a heartbeat after which an RDB storage marks a trial failed (a killed worker); "
                "the trial is redone once"})
    max_failures: int = field(default=5, metadata={
        "help": "stop after this many failed trials in a row (a space whose every trial fails)"})
    confirm_top: int = field(default=0, metadata={
        "help": "once the budget is met, this many best trials are each run again with --tune.confirm_seeds more "
                "seeds (validation only, never pruned, outside the budget) and the best is the one with the highest "
                "mean validation accuracy over its runs: on a small validation split the single best run of many "
                "is partly luck; 0: the best single run"})
    confirm_seeds: int = field(default=2, metadata={
        "help": "the extra seeds each of the --tune.confirm_top trials is run with"})
    cv_folds: int = field(default=5, metadata={
        "help": "once the budget is met, the finalists (the best trial of each of the --tune.cv_top best methods, "
                "vanilla KD and the student alone) are each trained on this many folds of the labeled training rows, "
                "paired, and the answer is chosen by their held-out accuracy (--tune.cv_rule); 0: the best validation "
                "trial"})
    cv_top: int = field(default=3, metadata={
        "help": "how many of the search's best methods (each by its best trial) are finalists beside the two "
                "baselines"})
    cv_rule: str = field(default="one_se", metadata={
        "help": "one_se: the best mean held-out accuracy, unless a baseline is within one paired standard error of "
                "it (then that baseline); best: the best mean"})
    progress: bool = field(default=True, metadata={"help": "the progress bar over trials"})

    def __post_init__(self) -> None:
        for option, low in (("n_trials", 1), ("seeds", 0), ("heartbeat_interval", 1), ("max_failures", 1),
                            ("confirm_top", 0), ("confirm_seeds", 0), ("cv_folds", 0), ("cv_top", 1)):
            if getattr(self, option) < low:
                raise LelpError(f"tune options need {option} >= {low}, got {getattr(self, option)}.")
        if self.cv_folds == 1:
            raise LelpError("tune options need cv_folds = 0 (no cross-validation) or at least 2, got 1.")
        if self.cv_rule not in CV_RULES:
            raise LelpError(f"tune options: cv_rule must be one of {', '.join(CV_RULES)}, got {self.cv_rule!r}.")
        if self.grace_period <= self.heartbeat_interval:
            raise LelpError(f"tune options need grace_period > heartbeat_interval (a live worker beats at least once "
                            f"in its grace period), got grace_period={self.grace_period}, "
                            f"heartbeat_interval={self.heartbeat_interval}.")
        self.exclude = list(self.exclude or [])

    def load_space(self) -> SearchSpace:
        named = {"learned": learned_space_path(), "full": default_space_path()}
        space = SearchSpace.from_dict(self.space) if isinstance(self.space, dict) else \
            SearchSpace.load(named.get(self.space, self.space))
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
        self.labeled_count = len(data.labeled_rows) if data.labeled_rows is not None else \
            len(data.source.split("train").labels)  # what the folds split
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
        with locked(data.cache.root / ".tune-prepare.lock"):  # workers of one machine: one builds, the others
            data.prepare_data()  # then find the cache complete
            for name in sorted(self.space.representations()):
                data.plan.build_representation(name, data.progress)
        self.datamodule = None  # trials build their own; nothing keeps this one's arrays alive


def study_folder(args: list[str], options: TuneOptions) -> tuple[Path, str]:
    folder = run_folder(args, options.root, options.study_name, default="study")
    return folder, folder.name


def open_study(base: Base, options: TuneOptions, folder: Path, name: str) -> optuna.Study:
    """The study, created with the baselines queued first (the study always measures them), or joined."""
    storage = open_storage(options.storage, folder, options.heartbeat_interval, options.grace_period)
    owner = Owner("fingerprint", base.fingerprint, "base config or search space", "--tune.study_name or --tune.root")

    def queue_baselines(study: optuna.Study) -> None:
        for method in ("ce", "kd"):
            if method in base.space.methods:
                study.enqueue_trial({"method": method}, user_attrs={"baseline": True})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        seeded = options.sampler or optuna.samplers.TPESampler(multivariate=True, group=True, seed=options.seed)
        fresh = options.sampler or optuna.samplers.TPESampler(multivariate=True, group=True)
    pruner = options.pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return open_shared_study(storage, name, options.storage or folder / "study.db", owner, seeded, pruner,
                             joining_sampler=fresh, setup=queue_baselines)


def finished(study: optuna.Study) -> int:
    """Finished search trials: what the budget counts (confirmations and folds are outside it)."""
    return sum(not is_extra(t) for t in study.get_trials(deepcopy=False, states=FINISHED))


class _Surplus(Exception):
    """A trial asked for after the budget was met by trials of other processes: never run, not a result."""


class Objective:
    """One trial: the method and parameters it samples, trained through the CLI's own objects."""

    def __init__(self, base: Base, options: TuneOptions, folder: Path):
        self.base, self.options, self.folder = base, options, folder
        self.current: optuna.Trial | None = None

    def refuse_surplus(self, trial: optuna.Trial) -> None:
        """A search trial whose budget trials ahead of it already met: stop this process, run nothing."""
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                 if t.number < trial.number and not is_extra(t)]
        if len(ahead) >= self.options.n_trials:
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise _Surplus(f"trial {trial.number}: the budget of {self.options.n_trials} was met by other processes")

    def __call__(self, trial: optuna.Trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        extra = is_extra(trial)
        if not extra:
            self.refuse_surplus(trial)
        self.current = trial
        method, values = self.base.space.suggest(trial)
        seed = self.base.seed + int(trial.user_attrs.get("confirm_seed", 0))
        overrides = method.overrides(values, self.base.lr, seed)
        if is_confirmation(trial):  # the same configuration, another seed: weights, batches and the strategy's seed
            overrides += ["--seed_everything", str(seed)]
        if is_fold(trial):  # the same configuration on one fold of the training rows, the same folds for all
            overrides += ["--data.folds", str(trial.user_attrs["cv_folds"]), "--data.fold",
                          str(trial.user_attrs["cv_fold"]), "--data.fold_seed", str(self.base.seed)]
        trial.set_user_attr("method", method.name)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("val_rows", self.base.val_rows)
        logs = logged_args(self.folder, "trials", f"trial_{trial.number:04d}", root_dir=self.folder / "trials")
        # a confirmation or a fold runs to the end: its value is averaged, not compared epoch by epoch
        pruning = [] if extra else [PyTorchLightningPruningCallback(trial, monitor=self.options.monitor)]
        return fit_trial([*self.base.args, *overrides, *logs], self.options.monitor, trial.set_user_attr, pruning,
                         outcomes=(optuna.TrialPruned,))


class _Progress:
    """The bar and a line per finished trial; stops this process after ``max_failures`` failures in a row."""

    def __init__(self, options: TuneOptions, bar):
        self.options, self.bar, self.failures = options, bar, 0

    def write(self, line: str) -> None:
        (self.bar.write if self.bar is not None else print)(line)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_fold(trial):
            if trial.state == TrialState.COMPLETE:
                self.write(f"trial {trial.number}: fold {trial.user_attrs['cv_fold'] + 1} of "
                           f"{trial.user_attrs['cv_folds']} of trial {trial.user_attrs['cv_of']}: {trial.value:.4f}")
            return
        if is_confirmation(trial):
            if trial.state == TrialState.COMPLETE:
                self.write(f"trial {trial.number} confirms trial {trial.user_attrs['confirm_of']} (seed "
                           f"+{trial.user_attrs['confirm_seed']}): {trial.value:.4f}")
            return
        if self.bar is not None:
            self.bar.n = min(finished(study), self.options.n_trials)
            self.bar.refresh()
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            self.failures += 1
            if self.failures >= self.options.max_failures:
                log.error("%d trials failed in a row (the last: trial %d); stopping.", self.failures, trial.number)
                study.stop()
        elif trial.state in FINISHED:
            self.failures = 0
            value = trial_value(trial)
            self.write(f"trial {trial.number} {trial.state.name.lower()}: {trial.user_attrs.get('method')} "
                       f"{method_params(trial)} → {float('nan') if value is None else value:.4f} "
                       f"({trial.user_attrs.get('wall_s', 0):.0f} s)")


def run_study(args: list[str], options: TuneOptions) -> dict:
    """The whole of ``lelp tune``: prepare the cache, search until the budget is met, then report and refit."""
    folder, name = study_folder(args, options)
    base = Base(args, options)
    for method in base.dropped:
        log.info("tune: method %r left out: its strategy needs fine labels, which this data has none of.", method)
    base.prepare()
    study = open_study(base, options, folder, name)
    kept = finished(study)
    if kept:  # a study this or another process began: its finished trials count, only the rest run
        log.info("tune: resuming the study %r (%s): %d finished trial%s kept, %d of %d to run.", name, folder, kept,
                 "s" if kept != 1 else "", max(options.n_trials - kept, 0), options.n_trials)
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
            # confirmations count too, but they exist only once the search trials have met the budget
            optimize(study, objective, [_Progress(options, bar), max_trials(options.n_trials, FINISHED)],
                     gc_after_trial=True)
    except KeyboardInterrupt:  # redo the interrupted trial first when the study resumes (Optuna marked it failed)
        requeue(study, objective.current, keep=("confirm_of", "confirm_seed"))
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
    cross_validate(study, objective, options, folder)
    pending = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
               if is_extra(t)]
    if pending:  # another process runs them: whoever finishes the last one writes the report
        log.warning("tune: %d confirmation or fold runs are still running in other processes; the process that "
                    "finishes the last one writes the report (or rerun the same command).", len(pending))
        return {"study": name, "folder": str(folder), "finished": done, "complete": False}
    return write_report(study, base, options, folder) | {"study": name, "folder": str(folder), "finished": done,
                                                          "complete": True}


def confirm(study: optuna.Study, objective: Objective, options: TuneOptions, folder: Path) -> None:
    """Run the best ``confirm_top`` search trials again with ``confirm_seeds`` more seeds each (queued once: a
    confirmation already waiting, running or complete is not queued again; a failed one is)."""
    if not options.confirm_top or not options.confirm_seeds:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / "report.lock"):
        fail_stale(study)
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
        optimize(study, objective, [_Progress(options, None)], n_trials=len(waiting), gc_after_trial=True)


def cross_validate(study: optuna.Study, objective: Objective, options: TuneOptions, folder: Path) -> None:
    """Run every finalist on every fold (queued once: a fold run waiting, running or complete is not queued again;
    a failed one is, so an interrupted decision resumes where it stopped)."""
    if not options.cv_folds:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / "report.lock"):
        fail_stale(study)  # a killed worker's fold run: failed and queued again, not waited for
        trials = study.get_trials(deepcopy=False)
        queued = {(t.user_attrs["cv_of"], t.user_attrs["cv_fold"]) for t in trials
                  if is_fold(t) and t.user_attrs.get("cv_folds") == options.cv_folds and t.state != TrialState.FAIL}
        chosen = finalists(top_trials(study, len(trials)), options.cv_top)
        for finalist in chosen:
            for fold in range(options.cv_folds):
                if (finalist.number, fold) not in queued:
                    study.enqueue_trial(finalist.params, user_attrs={"cv_of": finalist.number, "cv_fold": fold,
                                                                     "cv_folds": options.cv_folds})
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if is_fold(t)]
    if waiting:
        log.info("tune: cross-validating %d finalists (trials %s) on %d folds (%d runs)", len(chosen),
                 [t.number for t in chosen], options.cv_folds, len(waiting))
        optimize(study, objective, [_Progress(options, None)], n_trials=len(waiting), gc_after_trial=True)


def split_tune_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(the run's own arguments, the ``--tune`` / ``--tune.<name>`` ones with their values)."""
    return split_group_args(args, "tune")


def parse_options(tune_args: list[str]) -> TuneOptions:
    """The ``--tune`` options as :class:`TuneOptions`; a wrong one is one sentence naming the valid ones."""
    return parse_group_options(TuneOptions, "tune", tune_args)
