"""Dependencies by feature: a command whose extra is missing says which one and its pip line, in one sentence."""

import sys

import pytest
from helpers import CONFIGS

from lelp_lightning.cli import main
from lelp_lightning.errors import LelpError
from lelp_lightning.extras import missing_extra, require


@pytest.mark.parametrize(("command", "missing", "extra"), [
    (["tune", "--config", str(CONFIGS / "quickstart.yaml"), "--tune.n_trials", "2"], "optuna", "tune"),
    (["tune", "--help"], "optuna", "tune"),
    (["search", "--config", str(CONFIGS / "quickstart.yaml")], "optuna", "tune"),
    (["serve", "student/"], "litserve", "serve"),
    (["export", "--config", "c.yaml", "--ckpt_path", "l.ckpt", "--output", "o"], "onnx", "serve"),
])
def test_a_missing_extra_is_one_sentence_and_status_2(command, missing, extra, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, missing, None)  # what `import <missing>` sees when it is not installed
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"lelp: error: lelp {command[0]} needs the [{extra}] extra ({missing} is not installed): "
                   f"pip install 'lelp-lightning[{extra}]'.")


def test_require_passes_an_installed_module():
    require("json", "none", "this")
    with pytest.raises(LelpError, match=r"^lelp x needs the \[tune\] extra \(no_such_module is not installed\): "
                                        r"pip install 'lelp-lightning\[tune\]'\.$"):
        require("no_such_module", "tune", "lelp x")


def test_a_missing_module_deep_inside_a_run_names_its_extra():
    """The sentence-encoder teacher's transformers (an ImportError, wrapped as jsonargparse wraps it) and the W&B
    logger's wandb (Lightning names it only in its message, which jsonargparse copies)."""
    def instantiate_teacher():
        try:
            raise ModuleNotFoundError("No module named 'transformers'", name="transformers")
        except ImportError as err:
            raise ValueError("could not instantiate the teacher") from err

    with pytest.raises(ValueError, match="could not instantiate the teacher") as wrapped:
        instantiate_teacher()
    assert str(missing_extra(wrapped.value)) == ("this command needs the [text] extra (transformers is not installed): "
                                                 "pip install 'lelp-lightning[text]'.")
    lightning = ValueError("Not a valid subclass of Logger: Requirement 'wandb>=0.12.10' not met. HINT: ...")
    assert "[wandb] extra (wandb is not installed)" in str(missing_extra(lightning))
    assert missing_extra(ModuleNotFoundError("No module named 'numpyy'", name="numpyy")) is None
    assert missing_extra(ValueError("something else")) is None


@pytest.mark.parametrize("missing", ["model2vec", "skeletoken"])
def test_the_static_student_without_its_extra_is_one_sentence_before_any_work(missing, tmp_path, monkeypatch, capsys):
    """Its featuriser checks model2vec (and, before distilling, skeletoken) when the run is built: no teacher pass,
    no table, nothing in the cache."""
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "student" /
                 "static.yaml"), "--data.cache_dir", str(tmp_path / "cache"), "--trainer.default_root_dir",
                 str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lelp: error: the static-embedding student needs the [static] extra ({missing} is not installed): "
        "pip install 'lelp-lightning[static]'.")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_the_static_extra_installs_what_the_static_student_imports_and_all_includes_it():
    import tomllib

    extras = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert sorted(requirement.split(">")[0] for requirement in extras["static"]) == ["model2vec", "skeletoken"]
    assert "static" in extras["all"][0].split("[")[1].rstrip("]").split(",")
    assert not any(requirement.startswith("model2vec[") for extra in extras.values() for requirement in extra)
