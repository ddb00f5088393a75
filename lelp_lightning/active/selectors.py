"""Selectors: which pool rows to query from the teacher next, from the current student's view of the pool.

A selector registers under a short name by subclassing (``class Mine(Selector, name="mine", description=...)``;
plugins through the entry-point group ``lelp_lightning.selectors``). Each round it gets the student's class
probabilities on the unqueried pool and returns ``b`` distinct positions to query; :meth:`Selector.keep` may then
drop queried rows from the distillation set once their teacher outputs are known (the queries stay spent).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from lelp_lightning.active.depround import cap_marginals, dep_round
from lelp_lightning.active.rad import GAINS, gains, minimax_distribution
from lelp_lightning.errors import LelpError
from lelp_lightning.registry import Registry

selectors = Registry("selector", "lelp_lightning.selectors")


@dataclass
class RoundView:
    """What a selector knows when it chooses: the student's class probabilities [n, C] on the unqueried pool,
    the number of rows to query, a generator seeded by (run seed, round), and the teacher's error rate on the
    labeled validation split."""

    probabilities: np.ndarray
    batch: int
    rng: np.random.Generator
    teacher_error: float


class Selector(ABC):
    """Chooses ``view.batch`` distinct pool positions to query (indices into ``view.probabilities``)."""

    registered_name: str = ""

    def __init_subclass__(cls, name: str | None = None, description: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            selectors.register(cls, name, description or "")
            cls.registered_name = name

    @abstractmethod
    def select(self, view: RoundView) -> np.ndarray: ...

    def keep(self, queried: np.ndarray, student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
        """Which of the ``queried`` positions join the distillation set, from the student's and the teacher's
        class probabilities on them (default: all of them)."""
        return queried

    def describe(self) -> dict:
        """The selector's name and options (for the run's records)."""
        return {"name": self.registered_name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


def _top(scores: np.ndarray, batch: int) -> np.ndarray:
    """The ``batch`` positions of largest score (ties: the lower position first), sorted."""
    return np.sort(np.argsort(-scores, kind="stable")[:batch])


class RandomSelector(Selector, name="random", description="uniformly random pool rows"):
    def select(self, view: RoundView) -> np.ndarray:
        return np.sort(view.rng.choice(len(view.probabilities), view.batch, replace=False))


class MarginSelector(Selector, name="margin", description="the rows of smallest student margin (top-1 − top-2)"):
    def select(self, view: RoundView) -> np.ndarray:
        return _top(gains(view.probabilities, "margin"), view.batch)


class EntropySelector(Selector, name="entropy", description="the rows of largest student entropy"):
    def select(self, view: RoundView) -> np.ndarray:
        return _top(gains(view.probabilities, "entropy"), view.batch)


class ConfidentTeacherSelector(Selector, name="confident_teacher_uncertain_student",
                               description="query the most uncertain rows, keep those the teacher is sure of"):
    """LLKD's criterion (arXiv 2411.08028) under a query budget: the teacher's confidence is unknown before a
    query, so this spends the budget on the ``batch`` rows the student is least sure of (``uncertainty``) and
    keeps for distillation the share ``keep_fraction`` of them with the largest teacher confidence × student
    uncertainty; the rows it drops were queried and count against the budget."""

    def __init__(self, keep_fraction: float = 0.5, uncertainty: str = "entropy"):
        if not 0 < keep_fraction <= 1:
            raise LelpError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
        if uncertainty not in GAINS:
            raise LelpError(f"uncertainty must be one of {GAINS}, got {uncertainty!r}.")
        self.keep_fraction, self.uncertainty = keep_fraction, uncertainty

    def select(self, view: RoundView) -> np.ndarray:
        return _top(gains(view.probabilities, self.uncertainty), view.batch)

    def keep(self, queried: np.ndarray, student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
        score = teacher.max(1) * gains(student, self.uncertainty)
        kept = max(1, math.ceil(self.keep_fraction * len(queried)))
        return np.sort(queried[np.argsort(-score, kind="stable")[:kept]])


class RobustSelector(Selector, name="rad", description="robust active distillation: minimax over teacher mistakes"):
    """The paper's rule (:mod:`~lelp_lightning.active.rad`): gains from the student (``gain``), an adversary with
    ``mistakes`` corruptions among the ``batch`` queried rows (``auto``: ⌈teacher validation error × batch⌉, or a
    number), the minimax distribution over the pool restricted to a support of at least ``batch`` rows, its
    marginals batch·p capped at 1, and DepRound for exactly ``batch`` distinct rows."""

    def __init__(self, gain: str = "margin", mistakes: int | str = "auto"):
        if gain not in GAINS:
            raise LelpError(f"gain must be one of {GAINS}, got {gain!r}.")
        if mistakes != "auto" and not (isinstance(mistakes, int) and mistakes >= 0):
            raise LelpError(f"mistakes must be 'auto' or an integer >= 0, got {mistakes!r}.")
        self.gain, self.mistakes = gain, mistakes

    def adversary(self, view: RoundView) -> int:
        if self.mistakes == "auto":
            return min(view.batch, math.ceil(view.teacher_error * view.batch - 1e-9))
        return int(self.mistakes)

    def marginals(self, view: RoundView) -> np.ndarray:
        """P(row i is queried this round): batch · the minimax distribution, capped at 1."""
        g = gains(view.probabilities, self.gain)
        minimax = minimax_distribution(g, self.adversary(view), min_support=view.batch)
        return cap_marginals(minimax.p, view.batch)

    def select(self, view: RoundView) -> np.ndarray:
        return dep_round(self.marginals(view), view.rng)
