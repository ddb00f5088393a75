"""Named registries for strategies, objectives and students, filled by subclassing and by entry-point plugins.

A class registers itself through ``__init_subclass__(name=..., description=...)`` on its base class;
third-party packages add theirs through the entry-point groups ``lelp_lightning.strategies``,
``lelp_lightning.objectives`` and ``lelp_lightning.students``, which :func:`load_plugins` imports before the
CLI parses its arguments.

Short names in YAML and on the command line (``class_path: kmeans``, ``--data.strategy kmeans``): a
registry given an ``alias_module`` puts a class named after each short name into that module.
jsonargparse resolves a bare ``class_path`` by class name among the subclasses of the annotated base, so
it finds the alias; calling the alias builds an instance of the registered class itself, so nothing
downstream (state, fingerprints, checkpoints) can tell which name was used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from dataclasses import dataclass

from lelp_lightning.errors import LelpError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    description: str


class Registry:
    """Maps a short name to a class; unknown names raise with the list of valid ones."""

    def __init__(self, kind: str, entry_point_group: str, alias_module: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.alias_module = alias_module
        self._entries: dict[str, Entry] = {}

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
        if self.alias_module is not None and name != cls.__name__:
            module = importlib.import_module(self.alias_module)
            setattr(module, name, _alias(cls, name, module.__name__))

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


def _alias(cls: type, name: str, module: str) -> type:
    """A subclass of ``cls`` called ``name`` (same ``__init__`` signature) whose call builds a plain ``cls``."""

    class Alias(type(cls)):
        def __call__(alias, *args, **kwargs):
            return cls(*args, **kwargs)

    return Alias(name, (cls,), {"__module__": module, "__qualname__": name,
                                "__doc__": f"``{name}``: short name of :class:`{cls.__module__}.{cls.__qualname__}`."})


_plugins_loaded = False


def load_plugins() -> list[str]:
    """Import every installed plugin module once; returns the entry-point names that were loaded."""
    global _plugins_loaded
    loaded: list[str] = []
    if _plugins_loaded:
        return loaded
    _plugins_loaded = True
    for group in ("lelp_lightning.strategies", "lelp_lightning.objectives", "lelp_lightning.students"):
        for ep in importlib.metadata.entry_points(group=group):
            try:
                ep.load()
            except Exception as err:  # a broken plugin must not hide the others; say which one
                raise RuntimeError(f"plugin {ep.name!r} ({ep.value}) in group {group} failed to load: {err}") from err
            loaded.append(ep.name)
    return loaded
