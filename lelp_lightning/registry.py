"""Named registries for strategies, objectives, students, teachers, active-learning selectors and the exported
students' input builders, filled by subclassing and by entry-point plugins.

A class registers itself through ``__init_subclass__(name=..., description=...)`` on its base class (an input
builder: ``kind=...``); third-party packages add theirs through the entry-point groups
``lelp_lightning.strategies``, ``lelp_lightning.objectives``, ``lelp_lightning.students``,
``lelp_lightning.teachers``, ``lelp_lightning.selectors`` and ``lelp_lightning.input_builders``, which
:func:`load_plugins` imports before the CLI parses its arguments (the predictor loads only the last).

Short names in YAML and on the command line (``class_path: kmeans``, ``--data.strategy kmeans``,
``--data.teacher sentence_encoder``, ``--model.objectives+=kd``): :func:`resolve_short_names` makes
jsonargparse turn a registered short name into the registered class's own import path
(``lelp_lightning.strategies.kmeans.KMeansStrategy``), so
``--print_config``, the saved ``config.yaml`` and ``summary.json`` name the real class and re-run as they are.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import re
from dataclasses import dataclass

from lelp_lightning.errors import LelpError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Run configs, checkpoints and benchmark records written before short names resolved to the real class
# name a generated stand-in, ``lelp_lightning.<kind>.names.<short name>``; those still load.
_LEGACY_PATH = re.compile(r"^lelp_lightning\.(?:strategies|objectives|students)\.names\.([a-z][a-z0-9_]*)$")


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    description: str

    @property
    def class_path(self) -> str:
        """Where the class is defined: what a saved config records for this entry."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


class Registry:
    """Maps a short name to a class; unknown names raise with the list of valid ones."""

    def __init__(self, kind: str, entry_point_group: str):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        _REGISTRIES.append(self)

    def register(self, cls: type, name: str, description: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lower-case letters, digits and underscores.")
        if not description or "\n" in description.strip():
            raise ValueError(f"{self.kind} {name!r} needs a one-line description.")
        existing = self._entries.get(name)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"{self.kind} name {name!r} is already taken by {existing.cls.__module__}.{existing.cls.__qualname__}."
            )
        self._entries[name] = Entry(name, cls, description.strip())

    def get(self, name: str) -> type:
        key = name.lower()
        if key in self._entries:
            return self._entries[key].cls
        for entry in self._entries.values():  # a class name works too
            if entry.cls.__name__ == name:
                return entry.cls
        raise LelpError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}.")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries


_REGISTRIES: list[Registry] = []


def registered_class_path(base: type | tuple, name: str) -> str | None:
    """The import path of the class registered as ``name`` (a short name, or a legacy
    ``lelp_lightning.<kind>.names.<name>`` path) if that class is a subclass of ``base`` (a class or a tuple
    of classes, as jsonargparse passes the annotated type); None otherwise. A miss loads the plugins once."""
    legacy = _LEGACY_PATH.match(name)
    short = legacy.group(1) if legacy else name
    if not _NAME.match(short):
        return None
    bases = tuple(b for b in (base if isinstance(base, tuple) else (base,)) if inspect.isclass(b))
    for attempt in range(2):
        for registry in _REGISTRIES:
            entry = registry._entries.get(short)
            if entry is not None and issubclass(entry.cls, bases):
                return entry.class_path
        if attempt == 0 and not load_plugins():
            break
    return None


def resolve_short_names() -> None:
    """Make jsonargparse resolve a registered short name to its class's import path (idempotent).

    jsonargparse resolves a ``class_path`` without a dot only by *class name* among the subclasses of the
    annotated type, in one function, ``jsonargparse._typehints.resolve_class_path_by_name``, which every
    input goes through (``--data.strategy kmeans``, ``--model.objectives+=kd``, JSON values, stacked
    ``--config`` files, subclass config files, nested ``init_args``). jsonargparse 4.53 has no public hook
    for names other than class names, and rewriting the names before jsonargparse reads its inputs would
    mean re-implementing how it reads each of those forms; so this wraps that one private function, and
    only answers for registered names whose class fits the annotated type. The path it returns is what
    jsonargparse stores as ``class_path``, so saved configs record the real class. An unknown name still
    reaches jsonargparse unchanged and fails there (``LelpArgumentParser.error`` turns that into one line).
    """
    from jsonargparse import _typehints  # the private module: see above

    original = getattr(_typehints, "resolve_class_path_by_name", None)
    if original is None:  # a jsonargparse that moved it: fail loudly rather than lose short names
        raise RuntimeError("this jsonargparse has no _typehints.resolve_class_path_by_name; lelp's short names "
                           "(class_path: kmeans) need it: install a jsonargparse version lelp supports.")
    if getattr(original, "_lelp_short_names", False):
        return

    @functools.wraps(original)
    def resolve_class_path_by_name(cls, name):
        path = registered_class_path(cls, name) if isinstance(name, str) else None
        return path if path is not None else original(cls, name)

    resolve_class_path_by_name._lelp_short_names = True
    _typehints.resolve_class_path_by_name = resolve_class_path_by_name


_plugins_loaded = False
_GROUPS = ("lelp_lightning.strategies", "lelp_lightning.objectives", "lelp_lightning.students",
           "lelp_lightning.teachers", "lelp_lightning.selectors", "lelp_lightning.input_builders")


def load_plugins() -> list[str]:
    """Import every installed plugin module once; returns the entry-point names that were loaded."""
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    return [name for group in _GROUPS for name in load_group(group)]


def load_group(group: str) -> list[str]:
    """Import the plugin modules of one entry-point group (the predictor loads only its input builders, which
    import no torch); returns their entry-point names."""
    loaded: list[str] = []
    for ep in importlib.metadata.entry_points(group=group):
        try:
            ep.load()
        except Exception as err:  # a broken plugin must not hide the others; say which one
            raise RuntimeError(f"plugin {ep.name!r} ({ep.value}) in group {group} failed to load: {err}") from err
        loaded.append(ep.name)
    return loaded
