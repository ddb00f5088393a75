"""The labels-only regime: a teacher that answers with its label only (an LLM without log-probabilities), read
through the file teacher, against the same student trained on the true labels and on the teacher's labels.

    .venv/bin/python -m benchmarks.teachers.labels_only --cells tweets2,20ng --seeds 3   # resumable
    .venv/bin/python -m benchmarks.teachers.labels_only --list                            # the plan, what is done
    .venv/bin/python -m benchmarks.teachers.labels_only --table                           # RESULTS.md's table
    .venv/bin/python -m benchmarks.report                                                 # then RESULTS.md

Cells: the accuracy grid's tasks with its teachers (``spec.TASKS``, ``spec.TEACHERS``): tweets2 with MiniLM + head,
rt with mpnet + head (bf16 pass), 20ng with MiniLM + head; the student is the grid's sparse hashed bag
(``bag_sparse``: its epochs, batch size and base learning rate). Per cell:

1. ``lelp cache --export`` writes the cached teacher's outputs of every split under ``runs/labels_only/``
   (git-ignored), once. A cell whose teacher cache is not built is skipped: this benchmark never runs a teacher.
2. From that export, the teacher file the runs read (``FileTeacher``, docs/teachers.md), one per variant:
   ``labels``: ``row_id`` and ``label`` (the teacher's argmax class) and nothing else, as an LLM without
   log-probabilities answers; the file teacher reads it as smoothed one-hot logits log((1 − ε)·onehot + ε/C),
   ε = 0.05. ``top_logprob`` (tweets2 only): the log-probability of the top label only, as many APIs return, with
   the rule that the other C − 1 classes share the remaining mass 1 − p_top equally: log p_c = log((1 − p_top) /
   (C − 1)), log(1 − p_top) computed as the log-sum-exp of the other classes' log-probabilities (exact for two
   classes, where the file is the teacher's own log-softmax). Neither file holds an embedding, so the strategies
   read the file teacher's MiniLM encoder output (``--data.representation encoder``: the encoder's output whatever
   the file holds; with no embedding in the file ``final`` is the same array), and the classifier they see is the
   least-squares probe from it to the file's logits on the training rows.
3. Methods: ``ce``, the student alone on the true labels; ``kd``, the student on the teacher file's targets (KD,
   τ = 1); ``lelp``, ``kmeans``, ``gmm`` on the same targets with the MiniLM structure. Selection on validation,
   seed 0, ties to the first candidate: ce and KD pick the learning rate from the grid's ``LR_FACTORS`` × the
   student's base rate; the subclass methods take KD's and pick S from ``S_GRID`` (LELP: S × β from ``S_GRID`` ×
   ``BETAS``; k-means and GMM at β = 1, as in the grid). Finals: each choice on ``--seeds`` seeds, the test split
   read once each. Strategies group rows by their true label (``fit_labels`` as in the grid: every row is labeled).

Each run writes one immutable JSON record (atomically, through ``lelp_lightning.fileio``; an existing record is
never rerun nor rewritten) under ``benchmarks/results/labels_only/<task>__<variant>/``: its identity, metrics, the
teacher's accuracy, the sha256 of the teacher file and of the export, git sha, resolved config, versions, machine,
threads and wall time. :func:`section` is its part of RESULTS.md (``python -m benchmarks.report``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import provenance
from benchmarks.accuracy import grid, spec, tables
from lelp_lightning import fileio

RECORDS = spec.REPO / "benchmarks" / "results" / "labels_only"
FILES = spec.REPO / "runs" / "labels_only"  # git-ignored: the exports, the teacher files, the runs' folders
PROTOCOL = 1  # bump when a change makes old records incomparable (they are then ignored, not deleted)
STUDENT = "bag_sparse"
TEACHER_OF = {"tweets2": "minilm", "rt": "mpnet", "20ng": "minilm"}  # task -> the grid's teacher it distils
METHODS = ("ce", "kd", "lelp", "kmeans", "gmm")  # in selection order: KD is chosen before the subclass methods
SUBCLASS_METHODS = ("lelp", "kmeans", "gmm")
LABELS = {"ce": "student alone (true labels)", "kd": "KD on the teacher's targets", "lelp": "LELP",
          "kmeans": "k-means", "gmm": "GMM"}
CODE = (*grid.CODE, "benchmarks/teachers")  # what a record depends on: its git_dirty flag


@dataclass(frozen=True)
class Variant:
    label: str
    outputs: str  # the file teacher's ``outputs``
    tasks: tuple[str, ...]


VARIANTS = {
    "labels": Variant("the teacher's label only", "label", tuple(TEACHER_OF)),
    "top_logprob": Variant("the top label's log-probability only (the rest shared equally)", "log_probs",
                           ("tweets2",)),
}


# -- the teacher files -------------------------------------------------------------------------------------------
def export_path(task: str) -> Path:
    return FILES / f"{task}__{TEACHER_OF[task]}__teacher.npz"


def teacher_file(task: str, variant: str) -> Path:
    return FILES / f"{task}__{TEACHER_OF[task]}__{variant}.jsonl"


def teacher_args(task: str) -> list[str]:
    """The grid's options of ``task`` with its own teacher (what ``lelp cache --export`` reads)."""
    return [*spec.Cell(task, TEACHER_OF[task], STUDENT, "sup").args(), *spec.METHODS["ce"].build({}, 0),
            "--trainer.default_root_dir", str(FILES / "export")]


def export_teacher(task: str) -> Path | None:
    """The cached teacher's outputs of every split, written once by ``lelp cache --export``; None (and nothing
    run) when the teacher cache is not built."""
    from lelp_lightning.cli import build_cli, main

    path = export_path(task)
    if path.is_file():
        return path
    if build_cli(teacher_args(task), run=False).datamodule.plan.missing():
        return None
    FILES.mkdir(parents=True, exist_ok=True)
    if main(["cache", *teacher_args(task), "--export", str(path)]) != 0:
        raise SystemExit(f"lelp cache --export failed for {task} (above)")
    return path


def read_export(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(row ids [N], class names [C], the teacher's logits [N, C] as float64) of an NPZ export."""
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["row_id"], [str(c) for c in arrays["classes"]], arrays["logits"].astype(np.float64)


def label_rows(row_ids: np.ndarray, classes: list[str], logits: np.ndarray) -> list[dict]:
    """The ``labels`` file's rows: each row's id and the teacher's argmax class, nothing else."""
    return [{"row_id": int(r), "label": classes[t]} for r, t in zip(row_ids, logits.argmax(1), strict=True)]


def top_logprob_rows(row_ids: np.ndarray, classes: list[str], logits: np.ndarray) -> list[dict]:
    """The ``top_logprob`` file's rows: log p of the top class as the teacher gives it; each other class
    log((1 − p_top)/(C − 1)), with log(1 − p_top) the log-sum-exp of the other classes' log-probabilities."""
    from scipy.special import logsumexp

    log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
    top = log_probs.argmax(1)
    is_top = np.arange(len(classes))[None, :] == top[:, None]
    log_rest = logsumexp(np.where(is_top, -np.inf, log_probs), axis=1) - math.log(len(classes) - 1)
    shared = np.where(is_top, log_probs, log_rest[:, None])
    return [{"row_id": int(r), **{f"log_prob_{c}": float(v) for c, v in zip(classes, row, strict=True)}}
            for r, row in zip(row_ids, shared, strict=True)]


ROWS = {"labels": label_rows, "top_logprob": top_logprob_rows}


def write_teacher_file(export: Path, variant: str, path: Path) -> Path:
    """``variant``'s teacher file built from ``export``, as JSONL, atomically; an existing file is kept."""
    if not path.is_file():
        rows = ROWS[variant](*read_export(export))
        fileio.atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- runs ---------------------------------------------------------------------------------------------------------
def cell_args(task: str, variant: str) -> list[str]:
    """The grid's options of ``task`` and the student, with the teacher file of ``variant`` as the teacher."""
    student = spec.STUDENTS[STUDENT]
    return [*spec.cfg(str(spec.BASE.relative_to(spec.REPO))), *spec.TASKS[task].args,
            *spec.cfg("configs/teacher/file.yaml"), "--data.teacher.init_args.path", str(teacher_file(task, variant)),
            "--data.teacher.init_args.outputs", VARIANTS[variant].outputs, *student.args,
            "--trainer.max_epochs", str(student.epochs), "--data.batch_size", str(student.batch_size)]


@dataclass(frozen=True)
class Run:
    task: str
    variant: str
    method: str
    hp: tuple  # sorted items, hashable
    seed: int
    test: bool
    phase: str = field(compare=False, default="final")

    @property
    def hp_dict(self) -> dict:
        return dict(self.hp)

    def identity(self) -> dict:
        return {"protocol": PROTOCOL, "task": self.task, "teacher": TEACHER_OF[self.task], "student": STUDENT,
                "variant": self.variant, "method": self.method, "hp": self.hp_dict, "seed": self.seed,
                "test": self.test}

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def path(self) -> Path:
        hp = "_".join(f"{k}{v}" for k, v in self.hp)
        return RECORDS / f"{self.task}__{self.variant}" / \
            f"{self.method}__{hp}__seed{self.seed}__{'test' if self.test else 'val'}__{self.key}.json"

    def args(self) -> list[str]:
        representation = ["--data.representation", "encoder"] if self.method in SUBCLASS_METHODS else []
        return [*cell_args(self.task, self.variant), *spec.METHODS[self.method].build(self.hp_dict, self.seed),
                *representation, "--model.lr", str(self.hp_dict["lr"]), "--seed_everything", str(self.seed),
                "--trainer.default_root_dir", str(FILES / "runs" / self.key)]


def make_run(task: str, variant: str, method: str, hp: dict, seed: int, test: bool, phase: str) -> Run:
    return Run(task, variant, method, tuple(sorted(hp.items())), seed, test, phase)


def candidates(method: str, chosen: dict[str, dict]) -> list[dict]:
    """``method``'s candidates; a subclass method's need KD's choice (a KeyError until it is made)."""
    base = spec.STUDENTS[STUDENT].lr
    if method == "ce":
        return [{"lr": base * f} for f in spec.LR_FACTORS]
    if method == "kd":
        return [{"lr": base * f, "tau": 1.0} for f in spec.LR_FACTORS]
    betas = spec.BETAS if method == "lelp" else (1.0,)
    return [{"lr": chosen["kd"]["lr"], "S": s, "beta": b} for s in spec.S_GRID for b in betas]


def choices(task: str, variant: str, records: dict[str, dict]) -> tuple[dict[str, dict], list[Run]]:
    """(each method's choice so far, the validation runs named so far): the best seed-0 validation accuracy,
    ties to the first candidate (the grid's rule, ``benchmarks/accuracy/selection.py``)."""
    chosen: dict[str, dict] = {}
    runs: list[Run] = []
    for method in METHODS:
        try:
            options = candidates(method, chosen)
        except KeyError:  # KD is not measured yet
            continue
        named = [make_run(task, variant, method, hp, 0, False, "select") for hp in options]
        runs += named
        scores = [records[r.key]["metrics"]["val_accuracy"] if r.key in records else None for r in named]
        if None not in scores:
            chosen[method] = options[max(range(len(scores)), key=lambda i: (scores[i], -i))]
    return chosen, runs


def pairs(tasks: list[str], variants: list[str]) -> list[tuple[str, str]]:
    """The (task, variant) cells ``tasks`` × ``variants`` has (top_logprob only where it runs)."""
    return [(t, v) for t in tasks for v in variants if t in VARIANTS[v].tasks]


def plan(cells: list[tuple[str, str]], seeds: int, records: dict[str, dict]) -> dict[str, list[Run]]:
    """The runs of each phase that can be named now (a method's finals once it is chosen)."""
    phases: dict[str, list[Run]] = {"select": [], "final": []}
    for task, variant in cells:
        chosen, select_runs = choices(task, variant, records)
        phases["select"] += select_runs
        phases["final"] += [make_run(task, variant, m, chosen[m], s, True, "final")
                            for m in METHODS if m in chosen for s in range(seeds)]
    return phases


def load_records() -> dict[str, dict]:
    """Every record of the current ``PROTOCOL``, by key."""
    out = {}
    for path in sorted(RECORDS.glob("*/*.json")):
        record = json.loads(path.read_text())
        if record["identity"]["protocol"] == PROTOCOL:
            out[record["key"]] = record
    return out


def write_record(path: Path, record: dict) -> dict:
    """``record`` written once to ``path``, atomically; a record already there is kept and returned."""
    if path.is_file():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(path, record)
    return record


def execute(run: Run, git: tuple[str, bool], workers: int = 1) -> dict:
    """Train one run in this process and write its record (none if it exists); returns the record."""
    if run.path.is_file():
        return json.loads(run.path.read_text())
    file, export = teacher_file(run.task, run.variant), export_path(run.task)
    record = {
        "identity": run.identity(), "key": run.key, "phase": run.phase, "task": run.task, "variant": run.variant,
        "method": run.method, "hp": run.hp_dict, "seed": run.seed,
        "teacher_file": {"path": os.path.relpath(file, spec.REPO), "sha256": sha256(file),
                         "export": os.path.relpath(export, spec.REPO), "export_sha256": sha256(export)},
        "git_sha": git[0], "git_dirty": git[1], **grid.fit_and_score(run.args(), run.test, workers)}
    return write_record(run.path, record)


def prepare(task: str, variant: str) -> None:
    """The file teacher's cache entries and its encoder representation, built once in this process so that the
    runs only read them (the MiniLM output is shared with the encoder + head teachers' cached features)."""
    from lelp_lightning.cli import build_cli

    grid._quiet()
    args = [*cell_args(task, variant), *spec.METHODS["ce"].build({}, 0), "--data.representation", "encoder",
            "--trainer.default_root_dir", str(FILES / "prepare")]
    data = build_cli(args, run=False).datamodule
    data.prepare_data()
    data.setup("fit")


def run_phase(runs: list[Run], workers: int, git: tuple[str, bool]) -> int:
    """Run what is not recorded yet in ``workers`` one-thread processes; returns how many runs failed."""
    todo = [r for r in runs if not r.path.is_file()]
    if not todo:
        return 0
    print(f"  {len(todo)} runs to do ({len(runs) - len(todo)} done)", flush=True)
    failed, started = 0, time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=grid._worker_init) as pool:
        futures = {pool.submit(execute, run, git, workers): run for run in todo}
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run = futures[future]
            try:
                record = future.result()
            except Exception as err:  # reported; the run stays to do
                failed += 1
                print(f"  FAILED {run.task} {run.variant} {run.method} {run.hp_dict} seed {run.seed}: {err!r}",
                      flush=True)
                continue
            m = record["metrics"]
            shown = f"test {100 * m['test_accuracy']:.2f}" if run.test else f"val {100 * m['val_accuracy']:.2f}"
            print(f"  [{i}/{len(todo)} {time.perf_counter() - started:5.0f}s] {run.task} {run.variant} {run.method} "
                  f"{run.hp_dict} seed {run.seed}: {shown} ({record['wall_s']:.1f} s)", flush=True)
    return failed


# -- the table ----------------------------------------------------------------------------------------------------
def final_stats(records: dict[str, dict], seeds: int) -> dict[tuple[str, str], tuple[dict, float]]:
    """(task, variant) -> ({method: Stat of its chosen configuration's test accuracies}, teacher test accuracy)."""
    out = {}
    for task, variant in pairs(list(TEACHER_OF), list(VARIANTS)):
        chosen, _ = choices(task, variant, records)
        stats, teacher = {}, None
        for method in METHODS:
            if method not in chosen:
                continue
            found = [records.get(make_run(task, variant, method, chosen[method], s, True, "final").key)
                     for s in range(seeds)]
            found = [r for r in found if r is not None]
            if found:
                stats[method] = tables.Stat([r["metrics"]["test_accuracy"] for r in found])
                teacher = found[0]["teacher"]["test_teacher_accuracy"]
        if stats:
            out[(task, variant)] = (stats, teacher)
    return out


def beats_kd(stats: dict) -> tuple[str | None, float, float, list[str]]:
    """(the subclass method of the best mean, its Δ over KD, the Δ's SE, every subclass method above KD beyond
    noise by the grid's rule, ``tables.verdict``: Δ > 2·SE)."""
    measured = [m for m in SUBCLASS_METHODS if m in stats]
    if "kd" not in stats or not measured:
        return None, math.nan, math.nan, []
    best = max(measured, key=lambda m: stats[m].mean)
    wins = [m for m in measured if tables.verdict(*stats[m].diff(stats["kd"])) == "win"]
    return best, *stats[best].diff(stats["kd"]), wins


def table(seeds: int = 3) -> list[str]:
    stats_by_cell = final_stats(load_records(), seeds)
    head = ["cell", "teacher file", "teacher", *(LABELS[m] for m in METHODS), "best subclass − KD (Δ ± SE)",
            "subclass methods above KD beyond noise"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wins_on = []
    for (task, variant), (stats, teacher) in stats_by_cell.items():
        best, delta, se, wins = beats_kd(stats)
        if wins and variant == "labels":
            wins_on.append(task)
        shown = [f"{stats[m]} (n={stats[m].n})" if m in stats else "—" for m in METHODS]
        gap = "—" if best is None else f"{LABELS[best]} {delta:+.2f} ± {se:.2f} ({tables.verdict(delta, se)})"
        lines.append(f"| {task}/{TEACHER_OF[task]} | {variant} | {100 * teacher:.2f} | " + " | ".join(shown)
                     + f" | {gap} | {', '.join(LABELS[m] for m in wins) or 'none'} |")
    measured = [t for t, v in stats_by_cell if v == "labels"]
    lines += ["", f"Labels only: a subclass method beats KD on the teacher's labels beyond noise on {len(wins_on)} of "
              f"the {len(measured)} cells measured ({', '.join(wins_on) or 'none'}; {len(TEACHER_OF)} planned: "
              f"{', '.join(TEACHER_OF)}); the goal was at least 2 of 3."]
    return lines


def section(seeds: int = 3) -> list[str]:
    """The RESULTS.md section (``benchmarks/report.py`` puts it after the grid): intro and table."""
    records = load_records()
    if not records:
        return []
    cpus = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores" for r in records.values()})
    return ["## A teacher that gives labels only (`python -m benchmarks.teachers.labels_only`)", "",
            "The grid's teacher, exported with `lelp cache --export` and cut down to what an LLM without "
            "log-probabilities answers: each row's argmax label, read by the file teacher as smoothed one-hot "
            "targets (ε = 0.05); *top_logprob* keeps the top label's log-probability, the other classes sharing "
            "1 − p_top equally (exact for two classes). No embedding: the strategies read the MiniLM encoder's "
            "output and the least-squares probe to the file's targets. Student: the sparse hashed bag. The student "
            "alone trains on the true labels; KD (τ = 1) and the subclass methods on the teacher file. Selection on "
            f"validation, seed 0 (learning rate × {spec.LR_FACTORS}; S ∈ {spec.S_GRID}, LELP β ∈ {spec.BETAS}, "
            "at KD's learning rate), then the test split once per seed. Test accuracy %, mean ± sample std over "
            "seeds; *teacher*: the teacher's test accuracy (its argmax, the same in both files). Beyond noise: the "
            "grid's rule, Δ > 2·SE with SE = √(s₁²/n₁ + s₂²/n₂); the best subclass method is the one of the best "
            f"test mean of three, so its verdict is mildly optimistic. Records in `benchmarks/results/labels_only/` "
            f"({'; '.join(cpus)}).", "", *table(seeds), ""]


# -- main ---------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(TEACHER_OF), help="comma-separated tasks, run in this order")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="print the plan and what is done, run nothing")
    parser.add_argument("--table", action="store_true", help="print the table from the records, run nothing")
    args = parser.parse_args(argv)
    tasks, variants = args.cells.split(","), args.variants.split(",")
    unknown = [t for t in tasks if t not in TEACHER_OF] + [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown cells or variants {unknown}; cells: {', '.join(TEACHER_OF)}; variants: "
                     f"{', '.join(VARIANTS)}")
    if args.table:
        print("\n".join(table(args.seeds)))
        return
    if args.list:
        phases = plan(pairs(tasks, variants), args.seeds, load_records())
        for phase, runs in phases.items():
            print(f"{phase}: {len(runs)} runs named so far, {sum(r.path.is_file() for r in runs)} done")
        return
    git = provenance.git_state(*CODE)
    for task in tasks:
        print(f"{task}: export the {TEACHER_OF[task]} teacher's outputs", flush=True)
        export = export_teacher(task)
        if export is None:
            print(f"  skipped: the {TEACHER_OF[task]} teacher's cache of {task} is not built (this benchmark never "
                  "runs a teacher; build it with the grid's prepare phase)", flush=True)
            continue
        for cell in pairs([task], variants):
            write_teacher_file(export, cell[1], teacher_file(*cell))
            print(f"{task} {cell[1]}: prepare", flush=True)
            prepare(*cell)
            for phase in ("select", "final"):
                while True:  # the subclass methods' candidates exist once KD is measured
                    runs = plan([cell], args.seeds, load_records())[phase]
                    if all(r.path.is_file() for r in runs):
                        break
                    print(f"{task} {cell[1]}: {phase}", flush=True)
                    if run_phase(runs, args.workers, git):
                        sys.exit(f"{phase}: some runs failed (above); fix them and rerun: finished runs are kept.")
    print("done; `python -m benchmarks.report` writes benchmarks/RESULTS.md from the records", flush=True)


if __name__ == "__main__":
    main()
