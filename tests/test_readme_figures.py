"""The figures the README (outside the blocks ``python -m benchmarks.report`` generates) and docs/students.md quote by
hand come from one place: each is checked here against the generated benchmarks/RESULTS.md or the benchmark record
it was read from, so a rerun that changes a result fails here until every quote of it changes too."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
GENERATED = re.compile(r"<!-- results:(\w+):begin.*?<!-- results:\1:end -->", re.S)


def readme_by_hand() -> str:
    """README.md without its generated blocks."""
    return GENERATED.sub("", (ROOT / "README.md").read_text())


def quoting(name: str) -> str:
    """The hand-written text of README.md (its generated blocks left out) or of a docs page, one space between words."""
    text = readme_by_hand() if name == "README.md" else (ROOT / name).read_text()
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize(("where", "quote"), [
    ("README.md", "KD 80.81 against 82.44 % on 20NG, 84.37 against 84.32 % on tweets"),
    ("README.md", "teacher 86.08 % test against the frozen-encoder teacher's 82.00 %"),
    ("README.md", "teacher 90.85 % against 88.35 %"),
    ("README.md", "NMI 0.67 / 0.79"),
    ("README.md", "reaches 78.00 ± 0.13 %"),
    ("README.md", "below the teacher (80.97 %)"),
    ("README.md", "KD 78.12 ± 0.81, LELP 78.06 ± 0.62 against 72.02 ± 1.41 alone"),
    ("README.md", "level with SetFit there (LELP 78.06 ± 0.62"),
    ("docs/students.md", "90.17 ± 0.49 keeping layers 0, 1, 2 against 89.95 ± 0.43 keeping 0, 2, 4, KD 89.88 ± 0.06 "
                         "against 90.13 ± 0.25"),
    ("docs/students.md", "layers 0, 1, 2 (`first`) give the student alone 90.17 and KD 89.88, layers 0, 2, 4 "
                         "(`every_other`) 89.95 and 90.13"),
    ("docs/students.md", "KD 78.12 ± 0.81 and LELP 78.06 ± 0.62 (the validation pick) against 72.02 ± 1.41"),
    ("docs/students.md", "model2vec alone (70.88 ± 0.39). That is level with SetFit (78.00 ± 0.13)"),
    ("docs/students.md", "frozen-feature MLP student of that cell (best 75.21)"),
])
def test_each_accuracy_quoted_by_hand_is_in_results_md(where, quote):
    assert quote in quoting(where)
    results = RESULTS.read_text()
    missing = [figure for figure in re.findall(r"\d+\.\d\d", quote) if figure not in results]
    assert missing == [], f"{where} {quote!r}: {missing} not in benchmarks/RESULTS.md"


def test_the_serving_headline_is_the_newest_complete_student_vs_teacher_record():
    """The bag student with the grid's method through onnxruntime against the eager MiniLM teacher, binary tweets,
    from the newest record of the whole benchmark (a ``--models`` run records ``"complete": false``)."""
    records = [json.loads(p.read_text())
               for p in sorted((ROOT / "benchmarks" / "results" / "student_vs_teacher").glob("*.json"))]
    newest = [r for r in records if r.get("complete", True)][-1]
    runs = {(r["task"], r["model"], r["runtime"]): r for r in newest["runs"]}
    student, teacher = runs["tweets2", "bag_grid", "onnxruntime"], runs["tweets2", "teacher", "eager"]
    speedup, p50 = student["speedup_vs_eager_teacher"], student["latency_ms_p50"]
    quote = (f"serves {student['rows_per_s']:,.0f} rows/s at batch {student['batch_size']} through onnxruntime "
             f"against {teacher['rows_per_s']:.0f} for the eager MiniLM teacher ({speedup:.0f}× its throughput, "
             f"{p50:.2f} ms p50 for one text) at {100 * student['test_accuracy']:.2f}% test accuracy against the "
             f"teacher's {100 * teacher['test_accuracy']:.2f}%")
    assert quote in readme_by_hand().replace("\n", " ")


def test_the_transformer_and_setfit_throughput_table_quotes_its_record():
    """docs/serving.md's table of the transformer student and SetFit: each row's rows/s, ratio to the eager teacher
    and p50 latency as the record has them (rounded as the table shows them)."""
    record = json.loads((ROOT / "benchmarks" / "results" / "student_vs_teacher" /
                         "20261207T135546_055f75d1bb.json").read_text())
    runs = {(r["model"], r["runtime"]): r for r in record["runs"]}
    section = (ROOT / "docs" / "serving.md").read_text().split("### The transformer student and SetFit")[1]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "rows/s" not in line]
    names = {"MiniLM + MLP head (teacher)": "teacher", "static student": "static",
             "transformer student, 1 epoch": "transformer", "model2vec classifier": "model2vec",
             "model2vec pipeline": "model2vec_pipeline", "SetFit (MiniLM body + logistic regression)": "setfit"}
    assert len(rows) == 8
    for cells in rows:
        run = runs[names[cells[0].strip("| ")], cells[1]]
        assert cells[3] == f"{run['rows_per_s']:,.0f}"
        ratio = run["speedup_vs_eager_teacher"]
        assert cells[4] == (f"{ratio:.1f}×" if ratio < 10 else f"{ratio:.0f}×")
        assert cells[5].strip(" |") == f"{run['latency_ms_p50']:.2f}"
        accuracy = "—" if run["test_accuracy"] is None else f"{100 * run['test_accuracy']:.2f}%"
        assert cells[2] == accuracy
