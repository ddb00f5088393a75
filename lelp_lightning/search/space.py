"""The architecture space of ``lelp search``: a list of layers, each one CLI option and its values.

```yaml
layers:
  - name: embed_dim
    option: model.student.init_args.embed_dim
    values: [64, 32, 16, 8]          # the first value is the default (the largest)
  - name: hidden_1
    option: model.student.init_args.hidden_dims[0]   # an entry of a list option
    values: [256, 128, 64]
  - name: hidden_2
    option: model.student.init_args.hidden_dims[1]
    values: [0, 64, 32]              # 0 or null: skip the entry (a layer or block left out)
```

Options are the student's (``model.student.init_args.<arg>``) or the featuriser's (``data.featurizer.init_args.<arg>``):
the architecture of the bag is its bucket count and n-gram order as much as its embedding size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from lelp_lightning.errors import LelpError

_OPTION = re.compile(r"^(model\.student|data\.featurizer)\.init_args\.([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


@dataclass(frozen=True)
class Layer:
    name: str
    option: str
    values: tuple

    @property
    def group(self) -> str:
        return _OPTION.match(self.option).group(1)

    @property
    def arg(self) -> str:
        return _OPTION.match(self.option).group(2)

    @property
    def index(self) -> int | None:
        index = _OPTION.match(self.option).group(3)
        return None if index is None else int(index)


class ArchSpace:
    """The layers, in search order; an architecture is one value index per layer (0: the default)."""

    def __init__(self, layers: list[Layer]):
        if not layers:
            raise LelpError("the search space has an empty layer list; expected at least one layer with its options.")
        self.layers = layers

    @classmethod
    def from_dict(cls, spec: dict, where: str = "the search space") -> ArchSpace:
        if not isinstance(spec, dict) or "layers" not in spec:
            raise LelpError(f"{where} must be a mapping with a 'layers' list; got {type(spec).__name__}.")
        unknown = set(spec) - {"layers"}
        if unknown:
            raise LelpError(f"{where} has unknown key(s) {sorted(unknown)}; expected only 'layers'.")
        layers, names = [], set()
        for i, item in enumerate(spec["layers"] or []):
            if not isinstance(item, dict) or set(item) != {"name", "option", "values"}:
                raise LelpError(f"layer {i} of {where} must have exactly 'name', 'option' and 'values', got "
                                f"{sorted(item) if isinstance(item, dict) else item!r}.")
            if not _OPTION.match(str(item["option"])):
                raise LelpError(f"layer {item['name']!r} of {where}: option {item['option']!r} is not a student or "
                                "featuriser option; expected model.student.init_args.<arg>[<i>] or "
                                "data.featurizer.init_args.<arg>[<i>].")
            values = item["values"]
            if not isinstance(values, list) or not values:
                raise LelpError(f"layer {item['name']!r} of {where} needs a non-empty list of values, got {values!r}.")
            if item["name"] in names:
                raise LelpError(f"{where} names layer {item['name']!r} twice; layer names must be unique.")
            names.add(item["name"])
            layers.append(Layer(str(item["name"]), str(item["option"]), tuple(values)))
        return cls(layers)

    @classmethod
    def load(cls, path: str | Path) -> ArchSpace:
        path = Path(path)
        if not path.is_file():
            raise LelpError(f"search space file {path} does not exist; expected a YAML file with a 'layers' list.")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise LelpError(f"search space file {path} is not valid YAML ({str(err).splitlines()[0]}).") from None
        return cls.from_dict(spec, str(path))

    @property
    def num_options(self) -> list[int]:
        return [len(layer.values) for layer in self.layers]

    def check_against(self, classes: dict[str, type]) -> None:
        """Refuse an option the run's student or featuriser does not have (``classes``: group → class)."""
        for layer in self.layers:
            accepted = set(inspect.signature(classes[layer.group]).parameters) - {"self", "input_dim", "num_outputs"}
            if layer.arg not in accepted:
                raise LelpError(f"layer {layer.name!r}: {classes[layer.group].__name__} has no option {layer.arg!r}; "
                                f"its options are {', '.join(sorted(accepted))}.")

    def values(self, arch: tuple[int, ...]) -> dict[str, object]:
        return {layer.name: layer.values[i] for layer, i in zip(self.layers, arch, strict=True)}

    def overrides(self, arch: tuple[int, ...], defaults: dict[str, dict]) -> list[str]:
        """CLI arguments for ``arch``: one per option; a list option assembled from its indexed layers (entries of
        value 0 or null dropped), starting from the run's own list (``defaults``: group → init_args)."""
        options: dict[tuple[str, str], object] = {}
        for layer, i in zip(self.layers, arch, strict=True):
            key, value = (layer.group, layer.arg), layer.values[i]
            if layer.index is None:
                options[key] = value
                continue
            current = options.get(key)
            if current is None:
                current = list(defaults.get(layer.group, {}).get(layer.arg) or [])
            current = list(current) + [None] * (layer.index + 1 - len(current))
            current[layer.index] = value
            options[key] = current
        args = []
        for (group, arg), value in options.items():
            if isinstance(value, list):
                value = [v for v in value if v not in (0, None)]
            args += [f"--{group}.init_args.{arg}", json.dumps(value)]
        return args

    def fingerprint(self) -> str:
        payload = [[layer.name, layer.option, list(layer.values)] for layer in self.layers]
        return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:16]
