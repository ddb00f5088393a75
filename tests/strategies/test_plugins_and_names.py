"""Short names in YAML / on the command line, unknown names, and a third-party plugin through its entry point."""

import importlib.metadata
import sys

import pytest
import tomllib
import yaml
from helpers import CONFIGS, REPO

from lelp_lightning import registry
from lelp_lightning.cli import main
from lelp_lightning.errors import LelpError
from lelp_lightning.strategies import strategies

PLUGIN_DIR = REPO / "examples" / "lelp_plugin_example"


def printed_config(capsys, *args) -> dict:
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), *args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def print_config(capsys, *args) -> dict:
    return printed_config(capsys, *args)["data"]["strategy"]


def test_a_short_name_on_the_command_line_selects_the_strategy_and_takes_its_options(capsys):
    strategy = print_config(capsys, "--data.strategy", "kmeans", "--data.strategy.n_init", "5")
    assert strategy["class_path"] == "lelp_lightning.strategies.kmeans.KMeansStrategy"  # the real class
    assert strategy["init_args"]["n_init"] == 5 and strategy["init_args"]["assignment"] == "hard"


@pytest.mark.parametrize("config", sorted(p.name for p in (CONFIGS / "strategy").glob("*.yaml")))
def test_every_strategy_config_resolves_to_its_registered_class(config, capsys):
    strategy = print_config(capsys, "--config", str(CONFIGS / "strategy" / config))
    cls = strategies.get(config.removesuffix(".yaml"))
    assert strategy["class_path"] == f"{cls.__module__}.{cls.__qualname__}"


def test_short_names_in_every_form_are_saved_as_class_paths_and_the_saved_config_reruns(capsys, tmp_path):
    stacked = tmp_path / "bare.yaml"  # a bare name as the whole value, and in a list, in a config file
    stacked.write_text("model:\n  student: mlp\n  objectives: [kd, {class_path: rkd, init_args: {weight: 0.5}}]\n")
    sub = tmp_path / "strategy.yaml"  # a subclass config file
    sub.write_text("class_path: random_split\ninit_args: {margin: 5.0}\n")
    config = printed_config(capsys, "--config", str(stacked), "--model.objectives+=ce",
                            "--model.objectives+", '{"class_path": "weighted_kd"}', "--data.strategy", str(sub))
    assert config["data"]["strategy"]["class_path"] == "lelp_lightning.strategies.random_split.RandomSplitStrategy"
    assert config["data"]["strategy"]["init_args"]["margin"] == 5.0
    assert config["model"]["student"]["class_path"] == "lelp_lightning.students.networks.MLPStudent"
    assert [o["class_path"] for o in config["model"]["objectives"]] == [
        "lelp_lightning.objectives.kd.KnowledgeDistillation", "lelp_lightning.objectives.rkd.RelationalKD",
        "lelp_lightning.objectives.cross_entropy.GroundTruthCrossEntropy",
        "lelp_lightning.objectives.weighted.WeightedDistillation"]
    saved = tmp_path / "config.yaml"  # what LightningCLI writes into the run folder
    saved.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(saved), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == config


def test_run_configs_that_name_the_former_stand_in_classes_still_load(capsys):
    """Configs saved before short names resolved to the real class named ``lelp_lightning.<kind>.names.<name>``."""
    config = printed_config(capsys, "--data.strategy", "lelp_lightning.strategies.names.kmeans",
                            "--model.student", "lelp_lightning.students.names.mlp",
                            "--model.objectives", '[{"class_path": "lelp_lightning.objectives.names.kd"}]')
    assert config["data"]["strategy"]["class_path"] == "lelp_lightning.strategies.kmeans.KMeansStrategy"
    assert config["model"]["student"]["class_path"] == "lelp_lightning.students.networks.MLPStudent"
    assert config["model"]["objectives"][0]["class_path"] == "lelp_lightning.objectives.kd.KnowledgeDistillation"


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
    assert strategy["class_path"] == "lelp_plugin_example.NormBinsStrategy"
    assert strategy["init_args"]["num_subclasses"] == 2
