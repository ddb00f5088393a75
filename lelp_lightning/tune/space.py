"""A tuning study's search space, read from YAML: methods (a strategy and its objectives) and their parameters.

A trial first picks a method (Optuna parameter ``method``), then that method's own parameters (named
``<method>.<parameter>``, so each method's distributions stay its own) and the shared ones (named as they are).
What a parameter name means:

- ``lr_factor``: multiplies the base config's ``model.lr``;
- ``representation``: ``data.representation``; ``auto`` is ``final`` plus every representation the teacher has;
- ``data.*`` / ``model.*`` / ``trainer.*``: that config option, as ``--<name> <value>`` would set it;
- ``<class>.<arg>``: constructor argument ``arg`` of the method's class registered as ``class``;
- any other name: that constructor argument of every class of the method that takes it (at least one must).

A value list is a categorical choice; ``{low, high}`` (with ``log``, ``step``) a range, of integers when both
bounds are integers. Everything is checked when the space is read: an unknown method, class or parameter is one
sentence naming the valid ones.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from lelp_lightning.core import FINAL
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives import objectives as objective_registry
from lelp_lightning.strategies import strategies as strategy_registry

CONFIG_PREFIXES = ("data.", "model.", "trainer.")
SPECIALS = ("lr_factor", "representation")
_METHOD_KEYS = {"strategy", "objectives", "params"}
_RANGE_KEYS = {"low", "high", "log", "step"}


def default_space_path() -> Path:
    return Path(str(resources.files("lelp_lightning.tune") / "default_space.yaml"))


@dataclass(frozen=True)
class Distribution:
    """One parameter's values: ``choices`` (categorical) or a ``low``–``high`` range."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @classmethod
    def parse(cls, where: str, spec) -> Distribution:
        if isinstance(spec, list):
            if not spec or not all(isinstance(v, (bool, int, float, str)) or v is None for v in spec):
                raise LelpError(f"tune space: {where} must list at least one value (numbers, strings, booleans), "
                                f"got {spec!r}.")
            return cls(choices=tuple(spec))
        if isinstance(spec, dict):
            unknown = set(spec) - _RANGE_KEYS
            if unknown or not {"low", "high"} <= set(spec):
                raise LelpError(f"tune space: {where} must be a list of values or a range {{low, high[, log, step]}}, "
                                f"got {spec!r}.")
            low, high = spec["low"], spec["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high \
                    or (spec.get("log") and low <= 0):
                raise LelpError(f"tune space: {where} needs numbers low < high (low > 0 with log), got {spec!r}.")
            return cls(low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))
        if isinstance(spec, (bool, int, float, str)):
            return cls(choices=(spec,))  # a fixed value
        raise LelpError(f"tune space: {where} must be a list of values or a range {{low, high[, log, step]}}, "
                        f"got {spec!r}.")

    @property
    def integer(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial, name: str):
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, self.low, self.high, log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log, step=self.step)


def _class_spec(where: str, spec, registry) -> tuple[str, dict]:
    """(registered name, fixed init_args) of ``name`` or ``{class_path: name, init_args: {...}}``."""
    if isinstance(spec, dict) and set(spec) <= {"class_path", "init_args"} and "class_path" in spec:
        name, init_args = spec["class_path"], dict(spec.get("init_args") or {})
    elif isinstance(spec, str):
        name, init_args = spec, {}
    else:
        raise LelpError(f"tune space: {where} must be a registered {registry.kind} name or "
                        f"{{class_path: <name>, init_args: {{...}}}}, got {spec!r}.")
    if name not in registry:
        raise LelpError(f"tune space: {where} {name!r} is not a registered {registry.kind}; valid names: "
                        f"{', '.join(registry.names())}.")
    cls = registry.get(name)
    unknown = set(init_args) - set(_arguments(cls))
    if unknown:
        raise LelpError(f"tune space: {where} {name!r} has no option {sorted(unknown)[0]!r}; its options: "
                        f"{', '.join(_arguments(cls))}.")
    return name.lower(), init_args


def _arguments(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


@dataclass(frozen=True)
class Method:
    """A strategy, its objectives (each with fixed init_args) and the parameters searched for it."""

    name: str
    strategy: tuple[str, dict]
    objectives: tuple[tuple[str, dict], ...]
    params: dict[str, Distribution] = field(default_factory=dict)

    def classes(self) -> list[tuple[str, type]]:
        return [(self.strategy[0], strategy_registry.get(self.strategy[0]))] + \
            [(n, objective_registry.get(n)) for n, _ in self.objectives]

    @property
    def strategy_class(self) -> type:
        return strategy_registry.get(self.strategy[0])

    def check_param(self, name: str) -> None:
        if name in SPECIALS or name.startswith(CONFIG_PREFIXES):
            return
        classes = self.classes()
        owner, _, arg = name.rpartition(".")
        if owner:
            match = [cls for n, cls in classes if n == owner]
            if not match:
                raise LelpError(f"tune space: method {self.name!r} parameter {name!r} names {owner!r}, which is not "
                                f"one of its classes ({', '.join(n for n, _ in classes)}).")
            if arg not in _arguments(match[0]):
                raise LelpError(f"tune space: method {self.name!r} parameter {name!r}: {owner} has no option {arg!r}; "
                                f"its options: {', '.join(_arguments(match[0]))}.")
            return
        if not any(name in _arguments(cls) for _, cls in classes):
            options = sorted({a for _, cls in classes for a in _arguments(cls)} - {"seed", "chunk_size"})
            raise LelpError(f"tune space: method {self.name!r} has no parameter {name!r}; valid: "
                            f"{', '.join(options)}, or {', '.join(SPECIALS)} or a data.* / model.* / trainer.* "
                            "option.")

    def class_args(self, values: dict, strategy_args: dict) -> tuple[dict, list[tuple[str, dict]]]:
        """(the strategy's init_args, [(objective, init_args)]): ``values``' class parameters (not the special or
        config ones) set on a copy of ``strategy_args`` and on copies of the objectives' fixed init_args, each on
        every class that takes it. ``overrides`` and the accuracy benchmark build a run of this method with it."""
        strategy_args = dict(strategy_args)
        terms = [(n, dict(a)) for n, a in self.objectives]
        for name, value in values.items():
            if name in SPECIALS or name.startswith(CONFIG_PREFIXES):
                continue
            owner, _, arg = name.rpartition(".")
            if (not owner or owner == self.strategy[0]) and arg in _arguments(self.strategy_class):
                strategy_args[arg] = value
            for term_name, term_args in terms:
                if (not owner or owner == term_name) and arg in _arguments(objective_registry.get(term_name)):
                    term_args[arg] = value
        return strategy_args, terms

    def overrides(self, values: dict, base_lr: float, seed: int) -> list[str]:
        """The CLI arguments that make a base config run this method with ``values`` (parameter name → value)."""
        # every option spelled out: jsonargparse would carry the base config's strategy options over otherwise
        defaults = {n: p.default for n, p in inspect.signature(self.strategy_class.__init__).parameters.items()
                    if n != "self" and p.default is not inspect.Parameter.empty}
        strategy_args, terms = self.class_args(values, {**defaults, **self.strategy[1], "seed": seed})
        args: list[str] = []
        for name, value in values.items():
            if name == "lr_factor":
                args += ["--model.lr", repr(float(base_lr * value))]
            elif name == "representation":
                args += ["--data.representation", str(value)]
            elif name.startswith(CONFIG_PREFIXES):
                args += [f"--{name}", json.dumps(value) if not isinstance(value, str) else value]
        return ["--data.strategy", json.dumps({"class_path": self.strategy[0], "init_args": strategy_args}),
                "--model.objectives", json.dumps([{"class_path": n, "init_args": a} for n, a in terms]), *args]


@dataclass
class SearchSpace:
    """The methods a study chooses among and the parameters each is searched over."""

    methods: dict[str, Method]
    shared: dict[str, Distribution] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, spec: dict, source: str = "tune space") -> SearchSpace:
        if not isinstance(spec, dict) or not isinstance(spec.get("methods"), dict) or not spec["methods"]:
            raise LelpError(f"{source} must be a mapping with a non-empty 'methods' mapping (and optionally "
                            f"'shared'), got {type(spec).__name__}.")
        unknown = set(spec) - {"methods", "shared"}
        if unknown:
            raise LelpError(f"{source}: unknown key {sorted(unknown)[0]!r}; expected 'methods' and 'shared'.")
        shared = {k: Distribution.parse(f"shared parameter {k!r}", v) for k, v in (spec.get("shared") or {}).items()}
        methods = {}
        for name, entry in spec["methods"].items():
            if not isinstance(entry, dict) or set(entry) - _METHOD_KEYS or "objectives" not in entry:
                raise LelpError(f"tune space: method {name!r} must be a mapping with 'objectives' and optionally "
                                f"'strategy' (default none) and 'params', got {entry!r}.")
            terms = entry["objectives"]
            if not isinstance(terms, list) or not terms:
                raise LelpError(f"tune space: method {name!r} objectives must be a non-empty list, got {terms!r}.")
            method = Method(
                name=str(name),
                strategy=_class_spec(f"method {name!r} strategy", entry.get("strategy", "none"), strategy_registry),
                objectives=tuple(_class_spec(f"method {name!r} objective", t, objective_registry) for t in terms),
                params={k: Distribution.parse(f"method {name!r} parameter {k!r}", v)
                        for k, v in (entry.get("params") or {}).items()})
            for param in [*method.params, *shared]:
                method.check_param(param)
            methods[str(name)] = method
        return cls(methods, shared)

    @classmethod
    def load(cls, path: str | Path | None = None) -> SearchSpace:
        path = Path(path) if path is not None else default_space_path()
        if not path.is_file():
            raise LelpError(f"tune space file {str(path)!r} does not exist; expected a YAML file with 'methods'.")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise LelpError(f"tune space file {str(path)!r} is not valid YAML ({err.__class__.__name__}).") from err
        return cls.from_dict(spec, f"tune space file {str(path)!r}")

    def select(self, only: list[str] | None, exclude: list[str]) -> SearchSpace:
        """The space restricted to ``only`` (if given) and without ``exclude``; unknown names are refused."""
        for name in [*(only or []), *exclude]:
            if name not in self.methods:
                raise LelpError(f"tune: method {name!r} is not in the search space; its methods: "
                                f"{', '.join(self.methods)}.")
        keep = {n: m for n, m in self.methods.items() if (only is None or n in only) and n not in exclude}
        if not keep:
            raise LelpError("tune: no method is left to search once methods / exclude are applied.")
        return SearchSpace(keep, self.shared)

    def for_data(self, representations: list[str], has_fine_labels: bool) -> tuple[SearchSpace, list[str]]:
        """The space this task can run: ``representation: auto`` expanded to ``representations`` (final first),
        explicit representations checked, and methods whose strategy needs fine labels dropped when the data has
        none. Returns it and the names of the dropped methods."""
        dropped, methods = [], {}
        for name, method in self.methods.items():
            if "fine_labels" in method.strategy_class.requires and not has_fine_labels:
                dropped.append(name)
                continue
            params = dict(method.params)
            if "representation" in params:
                choices = params["representation"].choices
                if choices == ("auto",):
                    params["representation"] = Distribution(choices=tuple(representations))
                elif choices is None or set(choices) - set(representations):
                    raise LelpError(f"tune space: method {name!r} representation must be 'auto' or a list of this "
                                    f"teacher's representations ({', '.join(representations)}), got "
                                    f"{list(choices) if choices else 'a range'}.")
            methods[name] = Method(method.name, method.strategy, method.objectives, params)
        if not methods:
            raise LelpError("tune: every method of the search space needs fine labels, which this data has none of.")
        return SearchSpace(methods, self.shared), dropped

    def suggest(self, trial) -> tuple[Method, dict]:
        """Pick a method and its parameters in ``trial``; returns the method and {parameter name: value}."""
        method = self.methods[trial.suggest_categorical("method", list(self.methods))]
        values = {k: d.suggest(trial, k) for k, d in self.shared.items()}
        values |= {k: d.suggest(trial, f"{method.name}.{k}") for k, d in method.params.items()}
        return method, values

    def fingerprint(self) -> str:
        """What must not change while a study goes on (its methods and distributions), as a string."""
        return json.dumps({"methods": {n: [m.strategy, m.objectives, {k: vars(d) for k, d in m.params.items()}]
                                       for n, m in self.methods.items()},
                           "shared": {k: vars(d) for k, d in self.shared.items()}}, sort_keys=True, default=list)

    def representations(self) -> set[str]:
        return {r for m in self.methods.values() for r in (m.params.get("representation") or
                                                           Distribution(choices=(FINAL,))).choices or ()}

