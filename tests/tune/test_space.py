"""The search space of `lelp tune`: parsing, its errors, and what a sampled method turns into."""

import json

import optuna
import pytest
import yaml
from helpers import CONFIGS, tiny_run_args

from lelp_lightning.errors import LelpError
from lelp_lightning.objectives import objectives
from lelp_lightning.strategies import strategies
from lelp_lightning.tune.space import Distribution, SearchSpace, default_space_path
from lelp_lightning.tune.study import TuneOptions, parse_options, split_tune_args


def test_the_default_space_covers_every_registered_strategy_and_objective():
    space = SearchSpace.load()
    built_in = lambda registry: {e.name for e in registry.entries()  # noqa: E731  (other tests register plugins)
                                 if e.cls.__module__.startswith("lelp_lightning.")}
    assert {m.strategy[0] for m in space.methods.values()} == built_in(strategies)
    assert {n for m in space.methods.values() for n, _ in m.objectives} == built_in(objectives)
    assert yaml.safe_load(default_space_path().read_text())["methods"].keys() == space.methods.keys()


def test_distributions_match_optuna_and_hand_values():
    assert Distribution.parse("x", [1, 2, 4]).choices == (1, 2, 4)
    integer = Distribution.parse("x", {"low": 2, "high": 8})
    real = Distribution.parse("x", {"low": 0.25, "high": 4.0, "log": True})
    assert integer.integer and not real.integer
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        i, r = integer.suggest(trial, "i"), real.suggest(trial, "r")
        assert isinstance(i, int) and 2 <= i <= 8 and 0.25 <= r <= 4.0
        assert isinstance(trial.distributions["r"], optuna.distributions.FloatDistribution)
        assert trial.distributions["r"].log
        study.tell(trial, 0.0)
    assert Distribution.parse("x", 0.5).choices == (0.5,)  # a fixed value


@pytest.mark.parametrize(("spec", "message"), [
    ({"methods": {}}, "non-empty 'methods'"),
    ({"methods": {"m": {"objectives": ["kd"]}}, "extra": 1}, "unknown key 'extra'"),
    ({"methods": {"m": {"strategy": "kmean", "objectives": ["subclass_ce"]}}}, "'kmean' is not a registered strategy"),
    ({"methods": {"m": {"objectives": ["kdd"]}}}, "'kdd' is not a registered objective; valid names: ce, dkd"),
    ({"methods": {"m": {"objectives": ["kd"], "params": {"tau": [1.0]}}}}, "method 'm' has no parameter 'tau'; valid"),
    ({"methods": {"m": {"objectives": ["kd"], "params": {"rkd.weight": [1.0]}}}}, "names 'rkd', which is not one"),
    ({"methods": {"m": {"objectives": ["kd"], "params": {"kd.tau": [1.0]}}}}, "kd has no option 'tau'"),
    ({"methods": {"m": {"objectives": ["kd"], "params": {"temperature": []}}}}, "must list at least one value"),
    ({"methods": {"m": {"objectives": ["kd"], "params": {"temperature": {"low": 4, "high": 1}}}}}, "low < high"),
    ({"methods": {"m": {"objectives": ["kd"], "params": {"temperature": {"low": 1}}}}}, "list of values or a range"),
    ({"methods": {"m": {"objectives": [{"class_path": "kd", "init_args": {"temp": 2}}]}}}, "kd' has no option 'temp'"),
    ({"methods": {"m": {"strategy": "lelp"}}}, "must be a mapping with 'objectives'"),
    ({"methods": {"m": {"objectives": ["kd"]}}, "shared": {"nope": [1]}}, "has no parameter 'nope'"),
])
def test_a_bad_space_is_one_sentence_naming_what_was_expected(spec, message):
    with pytest.raises(LelpError, match=message.replace("(", r"\(")) as err:
        SearchSpace.from_dict(spec)
    assert "\n" not in str(err.value)


def test_representations_and_fine_labels_shape_the_space_for_the_data():
    space = SearchSpace.load()
    for_data, dropped = space.for_data(["final", "encoder"], has_fine_labels=False)
    assert dropped == ["oracle"] and "oracle" not in for_data.methods
    assert for_data.methods["kmeans"].params["representation"].choices == ("final", "encoder")
    assert for_data.representations() == {"final", "encoder"}
    explicit = SearchSpace.from_dict({"methods": {"k": {"strategy": "kmeans", "objectives": ["subclass_ce"],
                                                        "params": {"representation": ["conv"]}}}})
    with pytest.raises(LelpError, match=r"'auto' or a list of this teacher's representations \(final, encoder\)"):
        explicit.for_data(["final", "encoder"], True)
    with pytest.raises(LelpError, match="method 'kmean' is not in the search space"):
        space.select(["kmean"], [])
    assert list(space.select(["kd", "lelp"], ["lelp"]).methods) == ["kd"]


def test_tune_options_split_from_the_run_arguments_and_parse():
    run, tune = split_tune_args(["--config", "a.yaml", "--tune.n_trials", "5", "--trainer.max_epochs", "2",
                                 "--tune=x.yaml", "--tune.exclude", "[oracle]"])
    assert run == ["--config", "a.yaml", "--trainer.max_epochs", "2"]
    assert tune == ["--tune.n_trials", "5", "--tune=x.yaml", "--tune.exclude", "[oracle]"]
    options = parse_options(["--tune", str(CONFIGS / "tune" / "quick.yaml"), "--tune.seeds", "1"])
    assert (options.n_trials, options.seeds, options.methods[0]) == (16, 1, "ce")
    pruner = parse_options(["--tune.pruner", '{"class_path": "optuna.pruners.ThresholdPruner", '
                                             '"init_args": {"lower": 0.5}}']).pruner
    assert isinstance(pruner, optuna.pruners.ThresholdPruner)
    with pytest.raises(LelpError, match="tune options: .*n_trialz.*; valid: --tune <file>, --tune.space"):
        parse_options(["--tune.n_trialz", "3"])
    with pytest.raises(LelpError, match="n_trials >= 1"):
        parse_options(["--tune.n_trials", "0"])


@pytest.mark.parametrize("path", sorted((CONFIGS / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_tune_config_loads_its_space(path):
    options = parse_options(["--tune", str(path)])
    assert options.load_space().methods


def test_every_default_method_builds_the_run_it_names(tweets_cache_dir, tmp_path):
    """Each method of the default space, with values from its distributions, through the real CLI parser: the data
    module gets the method's strategy with S and the searched options, the model its objectives with theirs."""
    from lelp_lightning.runs import build_cli

    space, _ = SearchSpace.load().for_data(["final", "encoder"], has_fine_labels=True)
    base = tiny_run_args(tweets_cache_dir, tmp_path, wandb=False)
    for name, method in space.methods.items():
        values = {k: (d.choices[-1] if d.choices else d.high) for k, d in {**space.shared, **method.params}.items()}
        cli = build_cli([*base, *method.overrides(values, base_lr=0.02, seed=3)], run=False)
        data, model = cli.datamodule, cli.model
        assert type(data.strategy) is strategies.get(method.strategy[0]), name
        assert [type(o) for o in model.objectives] == [objectives.get(n) for n, _ in method.objectives], name
        assert data.strategy.seed == 3
        assert model.hparams.lr == pytest.approx(0.02 * values["lr_factor"])
        if "num_subclasses" in values:
            assert data.strategy.num_subclasses == values["num_subclasses"]
        elif method.strategy[0] == "none":
            assert data.strategy.num_subclasses == 1  # the base config's S = 4 of LELP is not carried over
        assert data.representation == values.get("representation", "final")
        for key, value in values.items():
            owner, _, arg = key.rpartition(".")
            targets = [o for o in model.objectives if not owner or objectives.get(owner) is type(o)]
            if any(hasattr(o, arg) for o in targets) and key not in ("lr_factor", "representation"):
                assert any(getattr(o, arg) == value for o in targets if hasattr(o, arg)), (name, key)
        json.dumps(method.overrides(values, 0.02, 3))  # the overrides are plain CLI strings
        del cli


def test_tune_options_validate_their_numbers():
    with pytest.raises(LelpError, match="grace_period > heartbeat_interval"):
        TuneOptions(heartbeat_interval=10, grace_period=5)
