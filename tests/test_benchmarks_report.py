"""The README's generated blocks: what ``python -m benchmarks.report`` writes, and the records' numbers."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from helpers import REPO

if str(REPO) not in sys.path:  # `pytest` alone does not put the repository root, benchmarks/'s parent, there
    sys.path.insert(0, str(REPO))
from benchmarks import report  # noqa: E402

README = (REPO / "README.md").read_text()
RESULTS = (REPO / "benchmarks" / "RESULTS.md").read_text()


def block(name: str) -> str:
    match = report.block_pattern(name).search(README)
    assert match, f"README.md has no results:{name} block"
    return match[2].rstrip("\n")


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    return report.readme_blocks()


def test_the_readme_blocks_are_what_the_report_generates(blocks):
    assert set(blocks) == {"quickstart", "accuracy", "static", "transformer", "tune"}
    for name, text in blocks.items():
        assert block(name) == text, f"README.md's results:{name} block is stale: run python -m benchmarks.report"
    assert report.rewrite_readme(README) == README


def test_the_quickstart_block_quotes_the_newest_fit_breakdown_record():
    """Medians recomputed with numpy from the newest record, in the README's rounding."""
    path = sorted((REPO / "benchmarks" / "results" / "fit_breakdown").glob("*.json"))[-1]
    runs = json.loads(path.read_text())["runs"]
    text = " ".join(block("quickstart").split())
    for variant in ("sparse", "dense"):
        mine = [r for r in runs if r["variant"] == variant]
        for seconds in (np.median([r["command_seconds"] for r in mine]), np.median([r["fit_seconds"] for r in mine])):
            assert f"{seconds:.1f} s" in text
        assert f"{100 * np.median([r['test_accuracy'] for r in mine]):.2f}%" in text
    assert f"{np.median([r['phases']['checkpoint'] for r in runs if r['variant'] == 'sparse']):.1f} s are" in text
    assert path.name in text


def test_the_accuracy_block_agrees_with_the_tables_of_results_md():
    """The gap shares and LELP's wins over KD, read back from RESULTS.md's tables (written by the other code path
    of the report: its comparison and gap tables)."""
    text = " ".join(block("accuracy").split())
    section = RESULTS.split("## LELP against vanilla KD and the other strategies")[1].split("\n## ")[0]
    comparison = {row.split(" | ")[0].strip("| "): row.split(" | ") for row in section.splitlines()
                  if row.startswith("| ") and not row.startswith("| cell")}
    default = [c for c in comparison if c in report.spec.DEFAULT_CELLS]
    wins = [c for c in default if "(win)" in comparison[c][2]]
    assert f"LELP beats vanilla KD beyond noise in {len(wins)} (" in text
    for cell in wins:
        assert f"{cell} {comparison[cell][2].split(' ± ')[0]}" in text
    shares = {c: comparison[c][7].strip(" |") for c in default if re.fullmatch(r"\d+%", comparison[c][7].strip(" |"))}
    assert shares
    for cell, share in shares.items():
        assert f"LELP closes {share} on {cell}" in text or f"and {share} on {cell}" in text


def test_the_static_block_quotes_the_validation_pick_of_each_static_cell():
    """The method the static paragraph names for a cell is the one whose selected configuration has the best seed-0
    validation accuracy in the raw records (read here with json, not through the tables' code)."""
    from benchmarks.accuracy import spec, tables

    records = tables.current(spec.load_records(), 3)
    _, chosen, _ = tables.final_stats(records, 3)
    text = " ".join(block("static").split())
    static_cells = [c for c in chosen if spec.CELLS[c].student == "static"]
    assert static_cells
    for cell in static_cells:
        folder = spec.RECORDS / cell.replace("/", "__")
        val = {}
        for path in folder.glob("*__seed0__val__*.json"):
            record = json.loads(path.read_text())
            if record["method"] != "oracle" and record["hp"] == chosen[cell].get(record["method"]):
                val[record["method"]] = record["metrics"]["val_accuracy"]
        best = max(val.values())
        pick = tables.validation_pick(cell, chosen[cell], {r["key"]: r for r in records})
        assert val[pick] == best
        if {"ce", "kd", pick} <= set(chosen[cell]) and f"{cell}: " in text:
            assert f"{cell}: {spec.METHODS[pick].label} " in text


def test_the_transformer_block_quotes_each_methods_test_records():
    """Each method's mean ± std in the transformer paragraph, recomputed with numpy from the raw test records of its
    selected configuration (read here with json); a cell without its three seeds of every method is not quoted."""
    from benchmarks.accuracy import spec, tables

    records = tables.current(spec.load_records(), 3)
    _, chosen, _ = tables.final_stats(records, 3)
    text = " ".join(block("transformer").split())
    cells = [c for c in spec.CELLS if spec.CELLS[c].student == "transformer"]
    for cell in cells:
        tested: dict = {}
        for path in (spec.RECORDS / cell.replace("/", "__")).glob("*__test__*.json"):
            record = json.loads(path.read_text())
            if record["hp"] == chosen.get(cell, {}).get(record["method"]) and record["seed"] < 3:
                tested.setdefault(record["method"], []).append(100 * record["metrics"]["test_accuracy"])
        complete = {m for m, v in tested.items() if len(v) == 3}
        if {"ce", "kd"} <= complete:
            for method in complete:
                values = np.array(tested[method])
                assert f"{spec.METHODS[method].label} {values.mean():.2f} ± {values.std(ddof=1):.2f}" in text
        else:
            assert f"{cell} (" not in text
    if not any(f"{c} (" in text for c in cells):
        assert text == "The transformer student has no finished grid cell yet."


def test_the_tune_block_counts_what_the_records_say():
    """The one-SE answers below max(KD, the student alone) and above KD beyond noise (|Δ| > 2 SE over the seeds),
    recomputed with numpy from the tune records and the grid's raw final records (read here with json)."""
    from benchmarks.accuracy import spec
    from benchmarks.tune import tune_vs_grid

    rows = [json.loads(p.read_text()) for p in sorted(tune_vs_grid.RECORDS.glob("*__cv*.json"))]
    if not rows:
        assert "No leave-one-cell-out" in block("tune")
        return
    below = above = 0
    for r in rows:
        finals: dict[str, list[float]] = {}
        for path in (spec.RECORDS / r["cell"].replace("/", "__")).glob("*.json"):
            record = json.loads(path.read_text())
            if record["identity"]["protocol"] == spec.PROTOCOL and record["phase"] == "final":
                finals.setdefault(record["method"], []).append(100 * record["metrics"]["test_accuracy"])
        mine = 100 * np.array(r["answers"]["cv_one_se"]["test_accuracy"])

        def versus(other, mine=mine):
            other = np.array(other)
            return mine.mean() - other.mean(), np.sqrt(mine.var(ddof=1) / len(mine) + other.var(ddof=1) / len(other))

        d, se = versus(max((finals["kd"], finals["ce"]), key=np.mean))
        below += d < -2 * se
        beats = any(np.mean(v) - np.mean(finals["kd"]) > 2 * np.sqrt(np.var(v, ddof=1) / len(v) + np.var(
            finals["kd"], ddof=1) / len(finals["kd"])) for m, v in finals.items() if m not in ("kd", "oracle"))
        d, se = versus(finals["kd"])
        above += beats and d > 2 * se
    text = " ".join(block("tune").split())
    assert f"one-SE rule: below max(KD, the student alone) beyond noise on {below} of {len(rows)}, above KD beyond " \
           f"noise on {above}." in text
