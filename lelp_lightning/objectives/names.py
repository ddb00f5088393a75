"""Short names of the registered objectives (``kd``, ``rkd``, …) as classes, for ``class_path: kd``.

Filled by the objective registry as objectives register (see :mod:`lelp_lightning.registry`); a name that
is not here yet may come from a plugin, so a miss loads the installed plugins once and looks again.
"""


def __getattr__(name: str):
    from lelp_lightning.registry import load_plugins

    if not name.startswith("__"):
        load_plugins()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no objective named {name!r}")
