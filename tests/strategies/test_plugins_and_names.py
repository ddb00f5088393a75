"""Short names in YAML / on the command line, unknown names, and a third-party plugin through its entry point."""

import importlib.metadata
import sys
import tomllib

import pytest
import yaml

from conftest import CONFIGS, REPO
from lelp_lightning import registry
from lelp_lightning.cli import main
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import KMeansStrategy, names, strategies

PLUGIN_DIR = REPO / "examples" / "lelp_plugin_example"


def print_config(capsys, *args) -> dict:
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), *args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)["data"]["strategy"]


def test_a_short_name_on_the_command_line_selects_the_strategy_and_takes_its_options(capsys):
    strategy = print_config(capsys, "--data.strategy", "kmeans", "--data.strategy.n_init", "5")
    assert strategy["class_path"] == "lelp_lightning.strategies.names.kmeans"
    assert strategy["init_args"]["n_init"] == 5 and strategy["init_args"]["assignment"] == "hard"


@pytest.mark.parametrize("config", sorted(p.name for p in (CONFIGS / "strategy").glob("*.yaml")))
def test_every_strategy_config_resolves_to_its_registered_class(config, capsys):
    strategy = print_config(capsys, "--config", str(CONFIGS / "strategy" / config))
    module, name = strategy["class_path"].rsplit(".", 1)
    assert type(getattr(sys.modules[module], name)()) is strategies.get(config.removesuffix(".yaml"))


def test_a_short_name_builds_an_instance_of_the_registered_class_itself():
    built = names.kmeans(num_subclasses=3)
    assert type(built) is KMeansStrategy and built.num_subclasses == 3
    assert built.fingerprint() == KMeansStrategy(num_subclasses=3).fingerprint()


def test_an_unknown_name_fails_with_the_list_of_valid_names(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--data.strategy", "kmeens", "--print_config"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "kmeens" in err and "valid strategy names: agglomerative, gmm, kmeans, lelp" in err
    with pytest.raises(LelpError, match="unknown strategy 'kmeens'; valid names: .*kmeans.*tsne_kmeans"):
        strategies.get("kmeens")


@pytest.fixture
def plugin_entry_point(monkeypatch):
    """``lelp_plugin_example`` as if pip-installed: importable, and announced by a (fake) entry point."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.delitem(sys.modules, "lelp_plugin_example", raising=False)
    monkeypatch.delitem(strategies._entries, "norm_bins", raising=False)
    monkeypatch.delattr(names, "norm_bins", raising=False)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    group = "lelp_lightning.strategies"
    declared = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]["entry-points"][group]
    points = [importlib.metadata.EntryPoint(name=n, value=v, group=group) for n, v in declared.items()]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: points if kw.get("group") == group else real(**kw))
    return points


def test_the_example_plugin_is_listed_and_usable_by_short_name(plugin_entry_point, capsys):
    assert [p.name for p in plugin_entry_point] == ["norm_bins"]
    assert "norm_bins" not in strategies
    assert main(["strategies"]) == 0
    listed = capsys.readouterr().out
    assert "norm_bins" in listed and "NormBinsStrategy" in listed and "embedding norm" in listed
    strategy = print_config(capsys, "--data.strategy", "norm_bins", "--data.strategy.num_subclasses", "2")
    assert strategy["class_path"] == "lelp_lightning.strategies.names.norm_bins"
    assert strategy["init_args"]["num_subclasses"] == 2
