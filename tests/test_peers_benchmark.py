"""The accuracy grid's new cells (per-student method lists) and its peers (model2vec, SetFit): the peers read the
grid runs' rows, their records are immutable and resumable, and the new cells leave the old plans as they were."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import CONFIGS, REPO, TINY_TEACHER, TINY_TWEETS, save_tiny_bert, tiny_tweets

if str(REPO) not in sys.path:  # `pytest` alone does not put the repository root, benchmarks/'s parent, there
    sys.path.insert(0, str(REPO))
from benchmarks.accuracy import grid, peers, spec, tables  # noqa: E402
from benchmarks.accuracy.plan import plan  # noqa: E402
from benchmarks.accuracy.selection import choices  # noqa: E402
from lelp_lightning.core import UNLABELED  # noqa: E402
from lelp_lightning.fileio import temporaries  # noqa: E402

NEW_CELLS = {"tweets2/minilm/static/sup", "tweets2full/minilm/static/sup", "tweets3/minilm/static/sup",
             "rt/mpnet/static/sup", "20ng/minilm/static/sup", "20ng/minilm_ft/static/sup",
             "tweets2/minilm_ft/transformer/sup", "tweets2/minilm_ft/transformer_first/sup", "rt/mpnet/transformer/few"}


def fake_record(run: spec.Run, val: float) -> dict:
    return {"identity": run.identity(), "key": run.key, "cell": run.cell, "method": run.method, "hp": run.hp_dict,
            "seed": run.seed, "phase": run.phase, "metrics": {"val_accuracy": val}}


def select_all(cell: spec.Cell) -> tuple[dict, dict]:
    """(every method's choice, the fake validation records), stage after stage, until nothing is left to select."""
    records: dict = {}
    while True:
        chosen, runs = choices(cell, records)
        todo = [r for r in runs if r.key not in records]
        if not todo:
            return chosen, records
        records |= {r.key: fake_record(r, 0.8) for r in todo}


@pytest.mark.parametrize(("name", "methods", "selection_runs"), [
    # ce: 3 learning rates; kd: 3 τ × 3 learning rates; lelp: 3 S × 3 β; every other: 3 S, or 3 τ for own τ
    ("tweets2/minilm/static/sup", spec.STATIC_METHODS, 3 + 9 + 9 + 3 * 7),
    # the transformer's lean selection: kd 3 τ at the student alone's learning rate, lelp 3 S at β = 1
    ("tweets2/minilm_ft/transformer/sup", spec.TRANSFORMER_METHODS, 3 + 3 + 3 + 3 * 3),
])
def test_a_students_method_list_is_its_cells_plan(name, methods, selection_runs):
    cell = spec.CELLS[name]
    assert spec.methods_for(cell) == [m for m in spec.METHODS if m in methods]
    chosen, records = select_all(cell)
    assert set(chosen) == set(methods)  # every listed method's stage bases are listed too
    assert len(records) == selection_runs
    finals = plan([cell], 3, records)["final"]
    assert sorted((r.method, r.seed) for r in finals) == sorted((m, s) for m in methods for s in range(3))


def test_the_lean_selection_gives_kd_the_student_alones_rate_and_lelp_beta_one():
    """The transformer's KD tries each τ at the learning rate the student alone chose (here its second candidate, the
    best on validation), LELP each S at β = 1; a full-selection student still tries every pair."""
    cell = spec.CELLS["tweets2/minilm_ft/transformer/sup"]
    _, ce_runs = choices(cell, {})
    assert [r.method for r in ce_runs] == ["ce"] * 3  # KD waits for the student alone's choice
    records = {r.key: fake_record(r, v) for r, v in zip(ce_runs, (0.80, 0.83, 0.81), strict=True)}
    chosen, runs = choices(cell, records)
    kd = [r.hp_dict for r in runs if r.method == "kd"]
    assert kd == [{"lr": 5e-5, "tau": t} for t in spec.TAUS]
    records |= {r.key: fake_record(r, 0.8 + 0.01 * (r.hp_dict.get("tau") == 2.0)) for r in runs if r.method == "kd"}
    chosen, runs = choices(cell, records)
    assert chosen["kd"] == {"lr": 5e-5, "tau": 2.0}
    lelp = [r.hp_dict for r in runs if r.method == "lelp"]
    assert lelp == [{"lr": 5e-5, "tau": 2.0, "S": s, "beta": 1.0} for s in spec.S_GRID]
    full = spec.CELLS["tweets2/minilm/static/sup"]
    assert len([r for r in choices(full, {})[1] if r.method == "kd"]) == len(spec.TAUS) * len(spec.LR_FACTORS)


def test_the_new_cells_are_listed_and_the_static_table_follows_the_teacher_encoder(capsys):
    assert set(spec.DEFAULT_CELLS) >= NEW_CELLS
    grid.main(["--list"])
    listed = capsys.readouterr().out
    assert all(f"  {name} (" in listed for name in NEW_CELLS)
    expected = {"minilm": "all-MiniLM-L6-v2", "minilm_ft": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}
    for name in NEW_CELLS:
        cell = spec.CELLS[name]
        args = cell.args()
        student_config = args.index(spec.STUDENTS[cell.student].args[1])  # its preset (--config PATH first)
        if cell.student == "static":  # after the preset, so it overrides the preset's MiniLM
            assert args.index("--data.featurizer.init_args.encoder") > student_config
            assert args[args.index("--data.featurizer.init_args.encoder") + 1] == expected[cell.teacher]
        else:
            assert "--data.featurizer.init_args.encoder" not in args
    full = spec.TASKS["tweets2full"].args
    assert "--data.source.init_args.max_rows" not in full and str(CONFIGS / "data" / "tweets_binary.yaml") in full


def test_the_old_cells_plans_still_name_every_stored_record():
    """The per-student lists leave the other cells' methods, plans and record keys as they were measured."""
    records = [r for r in spec.load_records() if r["cell"] not in NEW_CELLS]
    by_key = {r["key"]: r for r in records}
    old = [c for name, c in spec.CELLS.items() if name not in NEW_CELLS]
    assert all(spec.STUDENTS[c.student].methods is None for c in old)
    named = {run.key for runs in plan(old, 3, by_key).values() for run in runs}
    assert len(records) > 1000 and {r["key"] for r in records} <= named
    for r in records[:50]:  # a record's key is still the hash of its identity
        run = spec.Run(r["cell"], r["method"], tuple(sorted(r["hp"].items())), r["seed"], r["identity"]["test"])
        assert run.key == r["key"] and run.identity() == r["identity"]


def test_peer_runs_are_shared_by_cells_of_one_task_regime_and_encoder():
    keys = {name: {r.key for r in peers.runs_for(spec.CELLS[name], 3)} for name in spec.CELLS}
    assert keys["tweets2/minilm/bag_sparse/sup"] == keys["tweets2/minilm_ft/bag_sparse/sup"] \
        == keys["tweets2/minilm/static/sup"]
    assert not keys["tweets2/minilm/bag_sparse/sup"] & keys["tweets2/mpnet/mlp_minilm/sup"]  # another encoder
    assert keys["rt/mpnet/mlp_minilm/sup"] == keys["rt/mpnet_fp32/bag_sparse/sup"]  # the pass's precision aside
    few = peers.runs_for(spec.CELLS["rt/mpnet/mlp_minilm/few"], 3)
    assert sorted({(r.peer, r.encoder) for r in few}) == [("model2vec", "all-mpnet-base-v2"),
                                                         ("setfit", "all-MiniLM-L6-v2")]
    assert not keys["fmnist/cnn/mlp_pixels/sup"]  # no text, no peer


# -- a tiny real cell -------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_cell(tweets_cache_dir, monkeypatch, tmp_path):
    """300 real tweets with the MiniLM teacher, as the grid's cells are built; its few-label regime labels 60 rows."""
    monkeypatch.setattr(peers, "RECORDS", tmp_path / "peers")
    monkeypatch.setitem(spec.TASKS, "tiny", spec.Task("300 tweets", (
        "--config", str(CONFIGS / "data" / "tweets_binary.yaml"),
        "--data.source.init_args.max_rows", str(TINY_TWEETS["max_rows"]), "--data.cache_dir", str(tweets_cache_dir))))
    monkeypatch.setitem(spec.TEACHERS, "tiny", ("MiniLM", (
        "--config", str(CONFIGS / "teacher" / "minilm_mlp.yaml"),
        *(x for k in ("max_length", "head_hidden", "head_epochs") for x in (f"--data.teacher.init_args.{k}",
                                                                            str(TINY_TEACHER[k])))), "encoder"))
    monkeypatch.setitem(spec.STUDENTS, "tiny", spec.Student("bag", spec.STUDENTS["bag"].args, 0.02, 1, 32))
    monkeypatch.setitem(spec.TEACHER_ENCODERS, "tiny", "all-MiniLM-L6-v2")
    monkeypatch.setitem(spec.REGIMES, "few", ("60 labels", ("--data.num_labeled", "60")))
    cells = {regime: spec.Cell("tiny", "tiny", "tiny", regime) for regime in ("sup", "few")}
    for cell in cells.values():
        monkeypatch.setitem(spec.CELLS, cell.name, cell)
    return cells


def grid_rows(cell: spec.Cell) -> dict:
    """What a grid run of ``cell`` trains and is tested on: its data module's cached rows and labels."""
    from lelp_lightning.cli import build_cli

    cli = build_cli([*cell.args(), *spec.METHODS["ce"].build({}, 0), "--trainer.default_root_dir",
                     str(REPO / "runs" / "accuracy" / "test")], run=False, save_config=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    return {split: cli.datamodule.split_cache(split) for split in ("train", "val", "test")}


def test_the_peers_read_the_rows_of_the_grid_runs(tiny_cell):
    source = tiny_tweets()  # read again, independently of the grid's parser
    for regime, cell in tiny_cell.items():
        mine, theirs = peers.splits(cell), grid_rows(cell)
        for split in ("val", "test"):
            np.testing.assert_array_equal(mine[split].row_ids, theirs[split].row_id)
            np.testing.assert_array_equal(mine[split].labels, theirs[split].label)
            assert mine[split].texts == source.split(split).texts
        labeled = np.asarray(theirs["train"].label) != UNLABELED  # the few regime hides the transfer set's labels
        assert labeled.sum() == (60 if regime == "few" else len(theirs["train"]))
        np.testing.assert_array_equal(mine["train"].row_ids, np.asarray(theirs["train"].row_id)[labeled])
        np.testing.assert_array_equal(mine["train"].labels, np.asarray(theirs["train"].label)[labeled])
        by_id = dict(zip(source.split("train").row_ids.tolist(), source.split("train").texts, strict=True))
        assert mine["train"].texts == [by_id[i] for i in mine["train"].row_ids.tolist()]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with MiniLM's tokenizer: a model2vec distillation of it takes seconds."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"))


def test_a_model2vec_peer_record_is_written_once_and_resumed(tiny_cell, tiny_encoder, tmp_path, monkeypatch):
    from model2vec.distill import distill

    import lelp_lightning.fileio as fileio

    monkeypatch.setattr(peers, "CACHE", tmp_path / "cache")
    monkeypatch.setitem(spec.TEACHER_ENCODERS, "tiny", tiny_encoder)
    monkeypatch.setattr(peers, "MODEL2VEC_OPTIONS", {"pca_dims": 8})
    cell = tiny_cell["sup"]
    (run,) = peers.runs_for(cell, 1)
    assert (run.peer, run.encoder, dict(run.options)) == ("model2vec", tiny_encoder, {"pca_dims": 8})
    # the table is model2vec's own distillation of the encoder with the static student's options, built once
    table, seconds = peers.distilled(tiny_encoder, 8)
    reference = distill(model_name=tiny_encoder, pca_dims=8, sif_coefficient=1e-4, quantize_to="float32")
    np.testing.assert_allclose(table.initial_table(), reference.embedding, rtol=0, atol=1e-6)
    assert seconds > 0 and peers.distilled(tiny_encoder, 8)[1] is None

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between the record's write and its rename

    replace = fileio.os.replace
    monkeypatch.setattr(fileio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        peers.execute(run, cell, ("0" * 40, False))
    monkeypatch.setattr(fileio.os, "replace", replace)
    assert not run.path.exists() and temporaries(run.path.parent) == []  # nothing half-written is left
    peers.main(["--cells", cell.name, "--peers", "model2vec", "--seeds", "1"])
    record = json.loads(run.path.read_text())
    assert record["identity"] == run.identity() and record["key"] == run.key
    assert record["rows"] == {split: len(tiny_tweets().split(split)) for split in ("train", "val", "test")}
    assert set(record["versions"]) >= {"model2vec", "torch", "python"} and record["machine"]["cpu"]
    assert record["threads"] == 1 and record["fit_s"] > 0 and record["distill_s"] is None  # the cache had it
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0

    def no_fit(*args):
        raise AssertionError("an existing record was rerun")

    monkeypatch.setitem(peers.FIT, "model2vec", no_fit)
    mtime = run.path.stat().st_mtime_ns
    peers.main(["--cells", cell.name, "--peers", "model2vec", "--seeds", "1"])
    assert peers.execute(run, cell, ("1" * 40, False)) == record and run.path.stat().st_mtime_ns == mtime


def test_the_peers_are_rows_of_their_cells_in_the_tables(tiny_cell):
    """Peer records (test accuracy over seeds, training seconds) → a row of each cell they belong to, and the peers'
    own table."""
    cell = tiny_cell["sup"]
    tests = [0.80, 0.82, 0.87]
    records = []
    for run in peers.runs_for(cell, 3):
        records.append({"identity": run.identity(), "key": run.key, "peer": run.peer, "task": run.task,
                        "regime": run.regime, "encoder": run.encoder, "options": dict(run.options), "seed": run.seed,
                        "metrics": {"test_accuracy": tests[run.seed], "test_macro_f1": 0.7, "val_accuracy": 0.8},
                        "fit_s": 10.0 * (run.seed + 1), "machine": {"cpu": "test cpu"}})
    shown = peers.cell_stats(records, 3)
    assert set(shown) == {cell.name} and set(shown[cell.name]) == {"model2vec"}
    stats = {cell.name: {"kd": tables.Stat([0.81, 0.81, 0.82])}}
    teacher = {cell.name: {"test_teacher_accuracy": 0.9, "test_majority_class_rate": 0.5}}
    text = "\n".join(tables.task_table("tiny", stats, teacher, shown))
    mean, std = 100 * np.mean(tests), 100 * np.std(tests, ddof=1)
    assert f"| *peer:* {peers.PEERS['model2vec']} | **{mean:.2f} ± {std:.2f} (20 s)** |" in text  # above KD: bold
    rows = "\n".join(tables.peer_table(records, 3))
    assert f"| tiny / sup | model2vec | all-MiniLM-L6-v2 | {{\"pca_dims\": 256}} | 3 | {mean:.2f} ± {std:.2f} |" in rows
    assert "| 20.0 | test cpu | tiny/tiny/tiny/sup |" in rows


def test_only_seed_lists_that_seeds_runs_alone(capsys):
    peers.main(["--cells", "rt/mpnet/mlp_minilm/few", "--seeds", "3", "--only_seed", "1", "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" seed 1 " in line for line in lines)  # model2vec and SetFit
    assert sorted(line.split()[1] for line in lines) == ["model2vec", "setfit"]
