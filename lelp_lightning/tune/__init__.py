"""``lelp tune``: the best student for a task, chosen on its validation split by an Optuna study."""

from lelp_lightning.tune.space import Distribution, Method, SearchSpace
from lelp_lightning.tune.study import TuneOptions, run_study

__all__ = ["Distribution", "Method", "SearchSpace", "TuneOptions", "run_study"]
