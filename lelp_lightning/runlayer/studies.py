"""The Optuna study that ``lelp tune`` and ``lelp search`` share between processes: opened, guarded, resumed.

Any number of processes (on one machine or many, through a shared storage) run one study. :func:`open_storage`
opens its storage, :func:`open_study` creates the study or joins it and refuses one made for another run
(:class:`Owner`), and a trial whose process dies is redone: an RDB storage fails a trial whose process stopped
beating its heartbeat and queues it again once (Optuna's ``RetryHeartbeatStaleTrialCallback``, found again with
:func:`has_retry`), and :func:`requeue` queues the trial a Ctrl-C interrupted. A budget (:func:`max_trials`) is
Optuna's ``MaxTrialsCallback`` over the trial states it counts.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from lelp_lightning.errors import LelpError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# what workers starting together hit while the first of them creates a new database's tables: retried
_RACES = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError)
_ATTEMPTS = 4


def _retrying(action: Callable[[], Any]) -> Any:
    for attempt in range(_ATTEMPTS - 1):
        try:
            return action()
        except _RACES:
            time.sleep(0.5 + attempt)
    return action()  # the last attempt: its race, if any, is raised


def open_storage(url: str | None, folder: Path, heartbeat_interval: int,
                 grace_period: int) -> optuna.storages.BaseStorage:
    """``url`` (an RDB URL, or ``journal:<file>``; default ``sqlite:///<folder>/study.db``). An RDB storage fails a
    trial whose process has not beaten for ``grace_period`` seconds and queues it again, once."""
    url = url or f"sqlite:///{(folder / 'study.db').resolve()}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            return _retrying(lambda: optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=retry))
    except Exception as err:  # SQLAlchemy's many error types for a bad URL or an unreachable database
        raise LelpError(f"Optuna storage {url!r} could not be opened ({type(err).__name__}: "
                        f"{str(err).splitlines()[0]}); expected an Optuna RDB URL (sqlite:///file.db, "
                        "postgresql://…, mysql://…) or journal:<file>.") from err


@dataclass(frozen=True)
class Owner:
    """What a study was made for: the study's user attribute ``key`` holds ``value`` (JSON); a run whose value
    differs is refused, naming ``what`` differs and the ``hint`` option that gives it a study of its own."""

    key: str
    value: Any
    what: str
    hint: str

    def refuse(self, name: str, where: Any, found: Any) -> LelpError:
        shown = f" (fingerprint {found}, this run's {self.value})" if isinstance(self.value, str) else ""
        return LelpError(f"study {name!r} in {where} was made for another {self.what}{shown}; give this one its own "
                         f"{self.hint}.")


def open_study(storage: optuna.storages.BaseStorage, name: str, where: Any, owner: Owner,
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner | None = None,
               joining_sampler: optuna.samplers.BaseSampler | None = None,
               setup: Callable[[optuna.Study], None] | None = None) -> optuna.Study:
    """Create the study ``name`` (maximised) and run ``setup`` on it, or join it with ``joining_sampler`` (default
    ``sampler``) when another process made it. The creator marks it with its :class:`Owner` value last, so a joining
    process waits (up to 30 s) until the creator is done; a study marked for another run is refused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study = _retrying(lambda: optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                                          sampler=sampler, pruner=pruner))
        except optuna.exceptions.DuplicatedStudyError:
            study = _retrying(lambda: optuna.load_study(storage=storage, study_name=name,
                                                        sampler=joining_sampler or sampler, pruner=pruner))
        else:
            if setup is not None:
                setup(study)
            study.set_user_attr(owner.key, owner.value)
    found = study.user_attrs.get(owner.key)
    for _ in range(60):
        if found is not None:
            break
        time.sleep(0.5)
        found = study.user_attrs.get(owner.key)
    if found != json_value(owner.value):
        raise owner.refuse(name, where, found)
    return study


def json_value(value: Any) -> Any:
    """``value`` as the storage gives it back (through JSON)."""
    return json.loads(json.dumps(value))


def optimize(study: optuna.Study, objective: Callable, callbacks: Iterable = (), n_trials: int | None = None,
             gc_after_trial: bool = False) -> None:
    """``study.optimize`` in this process: a trial's exception fails the trial, not the process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=n_trials, callbacks=list(callbacks), catch=(Exception,),
                       gc_after_trial=gc_after_trial)


def max_trials(n_trials: int, states: tuple[TrialState, ...] = FINISHED) -> optuna.study.MaxTrialsCallback:
    """Stops this process once the study holds ``n_trials`` trials in ``states`` (every process's)."""
    return optuna.study.MaxTrialsCallback(n_trials, states=states)


def state_of(study: optuna.Study, number: int) -> TrialState:
    return next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)


def requeue(study: optuna.Study, trial: optuna.Trial | None, keep: tuple[str, ...] = ()) -> None:
    """Queue ``trial`` again (its parameters and its user attributes named in ``keep``) if it failed: the trial a
    Ctrl-C interrupted is redone first when the study resumes (``retry_of`` names it)."""
    if trial is not None and state_of(study, trial.number) == TrialState.FAIL:
        kept = {k: v for k, v in trial.user_attrs.items() if k in keep}
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **kept})


def fail_stale(study: optuna.Study) -> None:
    """Fail (and so queue again, once) the trials of killed processes now, rather than when the next trial starts:
    a phase that queues its runs by what is still running must not count a dead process's trial as running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def has_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the heartbeat queued ``trial`` again (a waiting, running or complete retry of it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
        return any(retried(t) == trial.number for t in study.get_trials(
            deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)))
