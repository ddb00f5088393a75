"""The static-embedding student under the outer loops, on 300 real tweets and a tiny encoder: ``lelp search``
over its table width (PCA dims, the student following) and hidden layer, each table distilled once and counted in
the cost; ``lelp tune`` and ``lelp active`` with it, its table starting from the distilled one in every fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, run_main, save_tiny_bert, tiny_run_args, tiny_tweets
from optuna.trial import TrialState

from lelp_lightning.cache import TeacherCache
from lelp_lightning.data import StaticTokenFeaturizer
from lelp_lightning.data.static_featurizer import MARKER
from lelp_lightning.runs import build_cli
from lelp_lightning.search.space import ArchSpace
from lelp_lightning.students import StaticEmbeddingStudent

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
PCA, HIDDEN = 8, 16  # the base run's table width and hidden layer
SPACE = CONFIGS / "search" / "static.yaml"


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with MiniLM's tokenizer, saved as a local encoder folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="module")
def warm_cache(tiny_encoder, tweets_cache_dir, tmp_path_factory) -> Path:
    """The tiny tweets' teacher cache with the base run's PCA-8 table distilled into it (each test copies it)."""
    cache = tmp_path_factory.mktemp("static-outer") / "cache"
    shutil.copytree(tweets_cache_dir, cache)
    featurizer = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA)
    featurizer.use_cache(TeacherCache(cache))
    assert featurizer.embedding_dim == PCA
    return cache


@pytest.fixture
def cache(warm_cache, tmp_path) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(warm_cache, copy)
    return copy


@pytest.fixture
def distillations(monkeypatch) -> list[int | None]:
    """The pca_dims of every model2vec distillation from now on (each one really runs)."""
    import model2vec.distill

    calls, distill = [], model2vec.distill.distill

    def counted(**options):
        calls.append(options["pca_dims"])
        return distill(**options)

    monkeypatch.setattr(model2vec.distill, "distill", counted)
    return calls


def base_args(cache: Path, tmp_path: Path, tiny_encoder: str, *extra: str) -> list[str]:
    """The preset on the tiny tweets and encoder: PCA 8, 16 hidden units, one epoch; embed_dim is left to the
    preset's null, so the student is as wide as the table."""
    return tiny_run_args(cache, tmp_path / "runs", "--config", str(CONFIGS / "student/static.yaml"),
                         "--data.featurizer.init_args.encoder", tiny_encoder,
                         "--data.featurizer.init_args.pca_dims", str(PCA),
                         "--model.student.init_args.hidden_dim", str(HIDDEN),
                         "--trainer.max_epochs", "1", *extra, wandb=False)


def hand_count(vocab: int, pca: int, hidden: int, outputs: int) -> int:
    """The table, the hidden layer (none at 0) and the C·S head."""
    width = hidden or pca
    return vocab * pca + (pca * hidden + hidden if hidden else 0) + width * outputs + outputs


def table_rows(cache: Path) -> dict[int, int]:
    """Each distilled table in ``cache``: width → rows, from its marker."""
    markers = [json.loads(p.read_text()) for p in cache.glob(f"static-*/{MARKER}")]
    return {m["dim"]: m["rows"] for m in markers}


def test_the_shipped_space_searches_the_presets_table_width_and_hidden_layer():
    space = ArchSpace.load(SPACE)
    space.check_against({"model.student": StaticEmbeddingStudent, "data.featurizer": StaticTokenFeaturizer})
    layers = {layer.option: layer.values for layer in space.layers}
    assert layers == {"data.featurizer.init_args.pca_dims": (256, 128, 64),
                      "model.student.init_args.hidden_dim": (512, 128, 0)}
    preset = yaml.safe_load((CONFIGS / "student/static.yaml").read_text())
    # the default architecture (every first value) is the preset, whose student follows the table's width
    assert preset["data"]["featurizer"]["init_args"]["pca_dims"] == 256
    assert preset["model"]["student"]["init_args"]["hidden_dim"] == 512
    assert preset["model"]["student"]["init_args"]["embed_dim"] is None


def test_the_student_follows_the_featurisers_table_width(tiny_encoder, cache, tmp_path, distillations):
    for pca in (PCA, 4):
        cli = build_cli(base_args(cache, tmp_path, tiny_encoder, "--data.featurizer.init_args.pca_dims", str(pca)),
                        run=False)
        student = cli.model.student
        assert student.embedding.weight.shape == (cli.datamodule.input_dim, pca) and student.embed_dim == pca
    assert distillations == [4]  # PCA 8 was in the cache already
    # a hashed bag student is left alone by the link (it has no table_dim): its own embed_dim stays
    bag = build_cli(tiny_run_args(cache, tmp_path / "bag", "--data.featurizer.num_buckets", "64",
                                  "--model.student.init_args.embed_dim", "12", wandb=False), run=False)
    assert bag.model.student.embedding.weight.shape == (64, 12)
    # the static student on a featuriser without a table has no width to follow: one sentence, before any fit
    ran = run_main("fit", *tiny_run_args(cache, tmp_path / "no-table", "--data.featurizer.num_buckets", "64",
                                         "--model.student", "static", "--model.student.init_args.embed_dim", "null",
                                         wandb=False))
    errors = [line for line in ran.stderr.splitlines() if line.startswith("lelp: error:")]
    assert ran.returncode == 2 and len(errors) == 1 and "has no table" in errors[0], ran.stderr[-2000:]
    assert errors[0].endswith("(configs/student/static.yaml).")


def test_lelp_search_over_table_width_and_hidden_layer_distils_each_width_once(tiny_encoder, cache, tmp_path,
                                                                               distillations):
    shipped = yaml.safe_load(SPACE.read_text())
    tiny = {"layers": [{**layer, "values": values}
                       for layer, values in zip(shipped["layers"], ([PCA, 4], [HIDDEN, 0]), strict=True)]}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny))
    ran = run_main("search", *base_args(cache, tmp_path, tiny_encoder), "--search.space", str(space),
                   "--search.buckets", "2", "--search.epochs", "1", "--search.seeds", "0",
                   "--search.budgets", "[1.0, 0.6]", "--search.root", str(tmp_path / "search"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    folder = tmp_path / "search" / "quickstart-layernas"
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) >= 3
    # every candidate built its own CLI, but PCA 8 came from the cache and PCA 4 was distilled by the first one
    assert distillations == [4]
    rows = table_rows(cache)
    assert set(rows) == {PCA, 4} and len(set(rows.values())) == 1
    vocab = rows[PCA]
    outputs = 2 * 4  # the quickstart: two classes, LELP with S = 4
    front = pd.read_csv(folder / "front.csv")
    assert set(front["pca_dims"]) == {PCA, 4} and len(front) == len(trials)
    for row in front.itertuples():  # the cost is the parameter count, the vocab × pca_dims table included
        assert row.cost == row.params == hand_count(vocab, row.pca_dims, row.hidden, outputs)
    # a budget's YAML is a runnable config whose student is as wide as its table
    chosen = min(json.loads((folder / "search.json").read_text())["chosen"], key=lambda c: c["budget"])
    assert chosen["values"]["pca_dims"] == 4
    cli = build_cli(["--config", chosen["yaml"]], run=False)
    assert cli.model.student.embedding.weight.shape == (vocab, 4)
    assert distillations == [4]


def test_lelp_tune_runs_a_study_with_the_static_student(tiny_encoder, cache, tmp_path, distillations):
    ran = run_main("tune", *base_args(cache, tmp_path, tiny_encoder), "--tune.n_trials", "2", "--tune.seeds", "0",
                   "--tune.methods", "[ce, lelp]", "--tune.progress", "false", "--tune.root", str(tmp_path / "tune"),
                   "--tune.cv_folds", "2")
    assert ran.returncode == 0, ran.stderr[-3000:]
    folder = tmp_path / "tune" / "quickstart"
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{folder / 'study.db'}")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    search = [t for t in trials if "cv_of" not in t.user_attrs]
    folds = [t for t in trials if "cv_of" in t.user_attrs]  # each method's finalist on both folds of the training rows
    assert len(search) == 2 and len(folds) == 2 * len({t.user_attrs["method"] for t in search})
    assert all(0 <= t.value <= 1 for t in trials)
    assert distillations == []  # every trial read the cached table
    best = build_cli(["--config", str(folder / "best.yaml")], run=False)
    assert isinstance(best.model.student, StaticEmbeddingStudent)
    assert best.model.student.embedding.weight.shape == (best.datamodule.input_dim, PCA)


def test_lelp_active_starts_round_0_from_the_distilled_table_and_each_later_round_from_the_last(
        tiny_encoder, cache, tmp_path, distillations, monkeypatch):
    starts, start_from = [], StaticEmbeddingStudent.start_from

    def recorded(student, featurizer):  # the table each fit starts from
        start_from(student, featurizer)
        starts.append(student.embedding.weight.detach().numpy().copy())

    monkeypatch.setattr(StaticEmbeddingStudent, "start_from", recorded)
    ran = run_main("active", *base_args(cache, tmp_path, tiny_encoder), "--data.num_labeled", "40",
                   "--data.teacher.batch_size", "8", "--active", str(CONFIGS / "active" / "rad.yaml"),
                   "--active.budget", "40", "--active.rounds", "2", "--active.root", str(tmp_path / "active"),
                   "--active.progress", "false")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert distillations == []
    featurizer = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA)
    featurizer.use_cache(TeacherCache(cache))
    distilled = featurizer.initial_table()
    never_trained = np.setdiff1d(np.arange(len(distilled)),
                                 featurizer.transform(tiny_tweets().split("train").texts).ids)
    folder = tmp_path / "active" / "quickstart-rad"
    assert [r["round"] for r in json.loads((folder / "summary.json").read_text())["rounds"]] == [0, 1, 2]
    tables = [torch.load(folder / f"round_{r:02d}" / "student.pt", weights_only=True)["embedding.weight"].numpy()
              for r in range(3)]
    assert len(starts) == 3  # one fit a round
    np.testing.assert_array_equal(starts[0], distilled)  # round 0: the distilled table
    for r in (1, 2):  # a later round continues from the previous round's table (docs/active.md)
        np.testing.assert_array_equal(starts[r], tables[r - 1])
    for table in tables:
        # lazy Adam moves only the rows a batch touches: a token of no training text still holds its distilled row
        np.testing.assert_array_equal(table[never_trained], distilled[never_trained])
        assert not np.allclose(table, distilled)
