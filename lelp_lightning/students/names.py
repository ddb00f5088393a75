"""Short names of the registered students (``hashed_bag``, ``mlp``, …) as classes, for ``class_path: mlp``.

Filled by the student registry as students register (see :mod:`lelp_lightning.registry`); a name that
is not here yet may come from a plugin, so a miss loads the installed plugins once and looks again.
"""


def __getattr__(name: str):
    from lelp_lightning.registry import load_plugins

    if not name.startswith("__"):
        load_plugins()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no student named {name!r}")
