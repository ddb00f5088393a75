"""The accuracy benchmark's harness: selection on validation, the run plan, one real run's record, the report."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import CONFIGS, REPO, TINY_TEACHER, TINY_TWEETS, tiny_tweets_teacher_metrics

if str(REPO) not in sys.path:  # `pytest` alone does not put the repository root, benchmarks/'s parent, there
    sys.path.insert(0, str(REPO))
from benchmarks.accuracy import grid, spec, tables  # noqa: E402
from benchmarks.accuracy.plan import plan  # noqa: E402
from benchmarks.accuracy.selection import choices  # noqa: E402
from benchmarks.tune import tune_vs_grid  # noqa: E402

CELL = spec.CELLS["20ng/minilm/bag_sparse/sup"]


def fake_record(run: spec.Run, val: float, test: float | None = None, teacher_val: float = 0.88) -> dict:
    metrics = {"val_accuracy": val} | ({"test_accuracy": test} if test is not None else {})
    return {"identity": run.identity(), "key": run.key, "cell": run.cell, "method": run.method, "hp": run.hp_dict,
            "seed": run.seed, "phase": run.phase, "metrics": metrics, "wall_s": 1.0,
            "teacher": {"val_teacher_accuracy": teacher_val, "test_teacher_accuracy": 0.9,
                        "test_majority_class_rate": 0.5},
            "machine": {"cpu": "test cpu", "cores": 2}}


def test_stat_and_verdict_match_numpy():
    values = [0.812, 0.834, 0.801]
    s = tables.Stat(values)
    assert s.mean == pytest.approx(100 * np.mean(values))
    assert s.std == pytest.approx(100 * np.std(values, ddof=1))
    other = tables.Stat([0.70, 0.71, 0.72])
    delta, se = s.diff(other)
    assert se == pytest.approx(np.sqrt(s.std**2 / 3 + other.std**2 / 3))
    assert tables.verdict(delta, se) == "win" and tables.verdict(-delta, se) == "loss"
    assert tables.verdict(0.1, 1.0) == "within noise"


def test_selection_is_on_validation_and_stage_two_uses_kds_learning_rate(monkeypatch):
    chosen, runs = choices(CELL, {})
    assert {r.method for r in runs} == {"ce", "kd"} and chosen == {}
    assert all(not r.test and r.seed == 0 for r in runs)
    records = {}
    for r in runs:  # KD best at (lr = 2 × base, τ = 2); the student alone ties everywhere → the first candidate
        hp = r.hp_dict
        best = r.method == "kd" and hp["tau"] == 2.0 and hp["lr"] == 2 * spec.STUDENTS["bag_sparse"].lr
        records[r.key] = fake_record(r, 0.9 if best else 0.8 if r.method == "kd" else 0.7)
    chosen, runs = choices(CELL, records)
    assert chosen["kd"] == {"lr": 2 * spec.STUDENTS["bag_sparse"].lr, "tau": 2.0}
    assert chosen["ce"] == {"lr": spec.LR_FACTORS[0] * spec.STUDENTS["bag_sparse"].lr}
    assert chosen["kd_alpha"] == {**chosen["kd"], "alpha": 0.5} and chosen["fitnets"] == chosen["kd"]
    stage2 = [r for r in runs if r.method not in ("ce", "kd")]
    assert {r.hp_dict["lr"] for r in stage2} == {chosen["kd"]["lr"]}
    assert {r.hp_dict["tau"] for r in stage2} == {2.0}  # KD's τ too, so S = 1 would be exactly KD
    assert sum(r.method == "lelp" for r in stage2) == len(spec.S_GRID) * len(spec.BETAS)
    assert "oracle" in chosen and chosen["oracle"]["S"] == 10  # one candidate: not selected
    assert {r.method for r in plan([CELL], 3, records)["final"]} == set(chosen)  # the chosen ones' finals
    for r in stage2:
        records[r.key] = fake_record(r, 0.85 if r.hp_dict.get("S") == 4 or r.hp_dict.get("M") == 4 else 0.84)
    chosen, runs = choices(CELL, records)
    stage3 = [r for r in runs if spec.METHODS[r.method].stage == 3]
    assert stage3 and all(not r.test and r.seed == 0 for r in stage3)  # τ is chosen on validation, seed 0 only
    assert not {r.method for r in plan([CELL], 3, records)["final"]} & {r.method for r in stage3}  # not chosen
    for method in ("lelp", "kmeans", "gmm", "rp_ensemble", "lelp@repr", "gmm@repr"):  # the base's choice, own τ
        mine = [r.hp_dict for r in stage3 if r.method == method + "+tau"]
        betas = spec.BETAS if method.startswith("gmm") else (chosen[method]["beta"],)
        assert sorted((h["tau"], h["beta"]) for h in mine) == sorted((t, b) for t in spec.TAUS for b in betas)
        assert all({k: v for k, v in h.items() if k not in ("tau", "beta")} ==
                   {k: v for k, v in chosen[method].items() if k not in ("tau", "beta")} for h in mine)
    for r in stage3:
        records[r.key] = fake_record(r, 0.86 if r.hp_dict["tau"] == 1.0 else 0.85)
    chosen, _ = choices(CELL, records)
    assert chosen["kmeans+tau"]["tau"] == 1.0 and chosen["kmeans"]["tau"] == 2.0
    phases = plan([CELL], 3, records)
    assert len(phases["final"]) == 3 * len(spec.methods_for(CELL)) and all(r.test for r in phases["final"])
    assert not phases["ablation"]  # 20ng/minilm/bag/sup is not an ablation cell
    monkeypatch.setattr(spec, "ABLATION_CELLS", (CELL.name,))
    phases = plan([CELL], 3, records)
    assert len(phases["ablation"]) == sum(len(v) for v in spec.ABLATIONS.values()) * 3


def test_representation_methods_read_the_teachers_other_representation_and_legacy_cells_keep_their_methods():
    hp = {"lr": 0.01, "S": 4, "beta": 1.0}
    args = spec.make_run(CELL, "kmeans@repr", hp, 0, False, "select").args()
    assert args[args.index("--data.representation") + 1] == "encoder"
    assert "--data.representation" not in spec.make_run(CELL, "kmeans", hp, 0, False, "select").args()
    conv = spec.make_run(spec.CELLS["fmnist/cnn15/mlp_pixels/sup"], "lelp@repr+tau", hp, 0, False, "select").args()
    assert conv[conv.index("--data.representation") + 1] == "conv"
    legacy = spec.CELLS["20ng/minilm/bag/sup"]
    assert set(spec.methods_for(legacy)) == set(spec.LEGACY_METHODS) and "rp_ensemble" not in spec.LEGACY_METHODS
    assert legacy.name not in spec.DEFAULT_CELLS and CELL.name in spec.DEFAULT_CELLS
    dense = spec.make_run(legacy, "kd", {"lr": 0.01, "tau": 2.0}, 0, False, "select").args()
    assert dense[dense.index("--model.student.init_args.sparse") + 1] == "false"  # as its records were measured


def test_cell_methods_restrict_a_cell_and_the_first_layers_cell_keeps_layers_0_1_2():
    few = spec.CELLS["rt/mpnet/transformer/few"]
    assert spec.methods_for(few) == ["ce", "kd", "lelp"]
    assert set(spec.methods_for(spec.CELLS["tweets2/minilm_ft/transformer/sup"])) == set(spec.TRANSFORMER_METHODS)
    args = spec.make_run(spec.CELLS["tweets2/minilm_ft/transformer_first/sup"], "ce", {"lr": 5e-5}, 0, False,
                         "select").args()
    assert args[len(args) - args[::-1].index("--model.student.init_args.layers")] == "first"  # the last one wins


def select_all(cell, records: dict) -> dict:
    """Fake validation records for every selection run, stage after stage, until every method is chosen."""
    while True:
        chosen, runs = choices(cell, records)
        todo = [r for r in runs if r.key not in records]
        if not todo:
            return chosen
        records |= {r.key: fake_record(r, 0.8) for r in todo}


def test_report_tables_come_from_the_records(tmp_path, monkeypatch):
    records = {}
    select_all(CELL, records)
    tests = {"kd": [0.80, 0.81, 0.82], "lelp": [0.84, 0.85, 0.86], "oracle": [0.90, 0.90, 0.91]}
    finals = []
    for r in plan([CELL], 3, records)["final"]:
        accs = tests.get(r.method, [0.70, 0.71, 0.72])
        finals.append(fake_record(r, 0.8, accs[r.seed]))
    monkeypatch.setattr(spec, "load_records", lambda: list(records.values()) + finals)
    monkeypatch.setattr(tables, "OUT", tmp_path / "RESULTS.md")
    monkeypatch.setattr(tables, "PLOTS", tmp_path / "plots")
    monkeypatch.setattr(tables, "PREPARE", tmp_path / "prepare")
    monkeypatch.setattr(tables, "SUBCLASSES", tmp_path / "subclasses")
    (tmp_path / "subclasses").mkdir()
    entry = {"sizes": [5, 5], "nmi": 0.5, "purity": 0.75, "ngrams": [["hockey", "nhl"], ["space"]]}
    (tmp_path / "subclasses" / "c.json").write_text(json.dumps({"cell": CELL.name, "methods": {
        "oracle": {"report": {"a": {**entry, "nmi": 1.0}, "b": {**entry, "nmi": 1.0}}},
        "kmeans@repr": {"report": {"a": entry, "b": entry}}}}))
    text = "\n".join(tables.page(seeds=3))
    assert "| k-means (hard) on the other representation | 2 | 0.50 / 0.50 | 0.75 / 0.75 |" in text
    assert "- hockey, nhl" in text
    assert "Some method beats KD beyond noise in 1 of 1 cells." in text  # LELP 85 ± 1 against KD 81 ± 1
    lelp = tables.Stat(tests["lelp"])
    assert f"**{lelp}**" in text  # the best column entry is bold (the oracle excluded)
    delta = 100 * (np.mean(tests["lelp"]) - np.mean(tests["kd"]))
    gap = delta / (100 * (np.mean(tests["oracle"]) - np.mean(tests["kd"])))
    assert f"{delta:+.2f}" in text and f"{100 * gap:.0f}%" in text
    assert (tmp_path / "plots" / "methods__20ng__minilm__bag_sparse__sup.png").stat().st_size > 1000
    assert "Every cell's final runs read one teacher pass." in text


def test_the_report_names_the_methods_that_read_another_teacher_pass():
    """Two teacher readings in one cell's final runs: both listed, each with its CPU and its methods."""
    runs = [spec.make_run(CELL, method, {"lr": 0.02}, seed, True, "final")
            for method in ("ce", "kd") for seed in range(3)]
    records = [fake_record(r, 0.8, 0.8, teacher_val=0.8627 if r.method == "kd" else 0.8570) for r in runs]
    records[0]["machine"]["cpu"] = "other cpu"
    lines = tables.teacher_readings(records)
    row = next(line for line in lines if line.startswith(f"| {CELL.name} |"))
    assert "val 85.70 / test 90.00 on " in row and "val 86.27 / test 90.00 on test cpu: kd |" in row
    assert tables.teacher_readings([records[0]]) == ["Every cell's final runs read one teacher pass.", ""]


def test_one_real_run_writes_an_immutable_record(tmp_path, tweets_cache_dir, monkeypatch):
    """A LELP run on 300 real tweets with the MiniLM teacher, through the LelpCLI objects, tested once."""
    monkeypatch.setattr(spec, "RECORDS", tmp_path / "records")
    monkeypatch.setitem(spec.TASKS, "tiny", spec.Task("300 tweets", (
        "--config", str(CONFIGS / "data" / "tweets_binary.yaml"),
        "--data.source.init_args.max_rows", str(TINY_TWEETS["max_rows"]), "--data.cache_dir", str(tweets_cache_dir))))
    monkeypatch.setitem(spec.TEACHERS, "tiny", ("MiniLM", (
        "--config", str(CONFIGS / "teacher" / "minilm_mlp.yaml"),
        *(x for k in ("max_length", "head_hidden", "head_epochs") for x in (f"--data.teacher.init_args.{k}",
                                                                            str(TINY_TEACHER[k])))), "encoder"))
    monkeypatch.setitem(spec.STUDENTS, "tiny", spec.Student("bag", spec.STUDENTS["bag"].args, 0.02, 1, 32))
    cell = spec.Cell("tiny", "tiny", "tiny", "sup")
    monkeypatch.setitem(spec.CELLS, cell.name, cell)
    monkeypatch.setattr(grid, "PREPARE", tmp_path / "prepare")
    grid.prepare(cell)  # as the grid does per cell before its runs: teacher pass, head, student features
    entries = {p.name for p in tweets_cache_dir.iterdir()}
    run = spec.make_run(cell, "lelp", {"lr": 0.02, "S": 2, "beta": 1.0}, 0, True, "final")
    record = grid.execute(run, ("0" * 40, False))
    assert {p.name for p in tweets_cache_dir.iterdir()} == entries  # a run only reads the prepared cache
    saved = json.loads(run.path.read_text())
    assert saved == record and record["identity"] == run.identity()
    assert set(record["metrics"]) == {"val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1"}
    assert 0.0 <= record["metrics"]["test_accuracy"] <= 1.0 and record["epochs"] == 1
    assert record["config"]["data"]["strategy"]["init_args"]["num_subclasses"] == 2
    assert record["config"]["model"]["lr"] == 0.02 and record["config"]["seed_everything"] == 0
    assert 0.5 < record["teacher"]["test_teacher_accuracy"] <= 1.0
    teacher = tiny_tweets_teacher_metrics(tweets_cache_dir)  # recomputed: argmax of the cached test logits vs labels
    assert record["teacher"]["test_teacher_accuracy"] == pytest.approx(teacher["accuracy"], abs=1e-6)
    assert record["teacher"]["test_majority_class_rate"] == pytest.approx(teacher["majority_class_rate"], abs=1e-6)
    # measured over seeds 0-3: the student scores the majority rate (42/60) exactly; no margin above it is safe
    assert record["metrics"]["test_accuracy"] >= record["teacher"]["test_majority_class_rate"] - 1e-6, record
    mtime = run.path.stat().st_mtime_ns
    assert grid.execute(run, ("1" * 40, False)) == record and run.path.stat().st_mtime_ns == mtime


def test_the_grid_validation_pick_is_the_best_seed0_validation_and_reports_its_test_mean():
    """The tune table's fair reference: every method at its chosen configuration scored by its seed-0 validation
    accuracy (the oracle left out, ties to the first method); the winner's test accuracy over its final seeds."""
    records = {}
    chosen = select_all(CELL, records)
    finals = []
    for r in plan([CELL], 3, records)["final"]:
        val = {"kmeans": 0.95, "oracle": 0.99}.get(r.method, 0.8)  # k-means best on validation, the oracle aside
        test = {"kmeans": [0.70, 0.72, 0.74], "lelp": [0.90, 0.91, 0.92]}.get(r.method, [0.8] * 3)[r.seed]
        finals.append(fake_record(r, val, test))
    # the seed-0 validation score of a selected method is its selection record's, where it has one
    for method in ("kmeans",):
        run = spec.make_run(CELL, method, chosen[method], 0, False, "select")
        records[run.key] = fake_record(run, 0.95)
    method, (mean, std) = tune_vs_grid.grid_validation_pick(CELL.name, list(records.values()) + finals)
    assert method == "kmeans"
    assert mean == pytest.approx(np.mean([0.70, 0.72, 0.74])) and std == pytest.approx(np.std([0.70, 0.72, 0.74],
                                                                                                ddof=1))


def method_args(args: list[str]) -> list[str]:
    """What a run's arguments say about its method: the strategy, the objectives, the representation it reads."""
    return [args[i + 1] for i in range(len(args) - 1)
            if args[i] in ("--data.strategy", "--model.objectives", "--data.representation")]


def test_every_stored_record_rebuilds_the_method_arguments_it_ran_with():
    """The grid's methods come from the tune space's definitions; the records say what each run was given."""
    records = spec.load_records()
    assert len(records) > 1000
    for record in records:
        run = spec.Run(record["cell"], record["method"], tuple(sorted(record["hp"].items())), record["seed"],
                       record["identity"]["test"])
        assert method_args(run.args()) == method_args(record["args"]), (record["cell"], record["key"])
    # every value a grid method sets is a parameter of its space method
    for name, method in spec.METHODS.items():
        hp = ({"tau": 2.0, "beta": 1.0, "alpha": 0.5, "S": 4, "M": 2}
              | ({"null_space": False, "rotation": "none"} if name == "lelp" else {}))  # LELP's ablations
        for param in method.values(hp):
            spec.SPACE.methods[method.runs].check_param(param)


def test_the_method_presets_are_methods_of_the_tune_space():
    """configs/method/*.yaml, the tune space and the grid name the same strategy + objectives combinations."""
    import yaml

    space = spec.SPACE
    presets = sorted((CONFIGS / "method").glob("*.yaml"))
    assert len(presets) >= 8
    for path in presets:
        preset = yaml.safe_load(path.read_text())
        objectives = [term["class_path"] for term in preset["model"]["objectives"]]
        strategy = (preset.get("data") or {}).get("strategy", {}).get("class_path")
        if strategy is None:  # subclass_ce.yaml: the objective of every pseudo-subclass strategy
            subclass = [m for m in space.methods.values() if m.strategy[0] != "none"]
            assert subclass and all([n for n, _ in m.objectives] == objectives for m in subclass), path.name
            continue
        method = space.methods[path.stem.removesuffix("_two_stage")]  # fitnets_two_stage: fitnets, another schedule
        assert (method.strategy[0], [n for n, _ in method.objectives]) == (strategy, objectives), path.name
    assert {m.runs for m in spec.METHODS.values()} <= set(space.methods)
