"""The accuracy benchmark: every method on real few-class tasks, hyper-parameters chosen on validation, seeds.

    .venv/bin/python benchmarks/accuracy/grid.py              # the whole grid (resumable), then the report
    .venv/bin/python benchmarks/accuracy/grid.py --list       # what would run, per phase, and what is done
    .venv/bin/python benchmarks/accuracy/grid.py --cells rt/mpnet/mlp_minilm/sup --seeds 3

A *cell* is (task, teacher, student, regime); a *run* is (cell, method, hyper-parameters, seed, whether it
is tested). Phases, in order, each waiting for the previous one:

1. ``prepare``: per cell, the teacher pass, the teacher's head and the student's features, built once into
   ``.lelp_cache`` (git-ignored) in this process, so that parallel runs only read caches.
2. ``select``: seed 0, validation only. The student alone picks its learning rate from ``LR_FACTORS`` × the
   student's base rate; vanilla KD picks (τ, learning rate) from ``TAUS`` × ``LR_FACTORS``; every
   distillation method then uses KD's learning rate and τ (so S = 1 is exactly the chosen KD), and picks S
   from ``S_GRID`` (LELP: S × β from ``BETAS``). A method with one candidate (KD α = 0.5, FitNets at KD's τ, the oracle at the true
   S) is not selected. Ties go to the first candidate in grid order.
3. ``final``: the selected configuration of every method, ``--seeds`` seeds, the test split read once each.
4. ``ablation``: on ``ABLATION_CELLS``, LELP's selected configuration with one option changed (S, β,
   null space off, rotation off), tested, ``--seeds`` seeds.

Each run writes one immutable JSON record under ``benchmarks/results/accuracy/records/<cell>/`` (written to a
temporary file, then renamed; an existing record is never rerun nor rewritten): git sha, the resolved
config, seed, versions, machine, metrics, wall time. ``report.py`` turns them into ``benchmarks/RESULTS.md``.
Runs execute in ``--workers`` processes of one thread each (the students are small; two single-threaded
runs beat one two-threaded run on two cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "accuracy" / "records"
PREPARE = REPO / "benchmarks" / "results" / "accuracy" / "prepare"
BASE = REPO / "benchmarks" / "accuracy" / "base.yaml"
PROTOCOL = 1  # bump when a change makes old records incomparable (they are then ignored, not deleted)

LR_FACTORS = (0.5, 1.0, 2.0)
TAUS = (1.0, 2.0, 4.0)
S_GRID = (2, 4, 8)
BETAS = (0.5, 1.0, 2.0)
FEW_LABELS = 1000


def cfg(path: str) -> list[str]:
    return ["--config", str(REPO / path)]


# -- tasks, teachers, students, regimes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    label: str
    args: tuple[str, ...]
    fine_per_class: int | None = None  # known hidden subclasses per class (the oracle's S), if any


TASKS = {
    "rt": Task("Rotten Tomatoes, binary (split by movie)", tuple(cfg("configs/data/rotten_tomatoes.yaml"))),
    "tweets2": Task("Tweets, binary (10,000-row stratified subset)",
                    (*cfg("configs/data/tweets_binary.yaml"), "--data.source.init_args.max_rows", "10000")),
    "tweets3": Task("Tweets, 3 classes (8,000-row stratified subset)",
                    (*cfg("configs/data/tweets_3class.yaml"), "--data.source.init_args.max_rows", "8000")),
    "20ng": Task("20 Newsgroups binarised (topic % 2; 4,000 / 400 / 1,200 subset)",
                 (*cfg("configs/data/newsgroups_binary.yaml"), "--data.source.init_args.max_train", "4000",
                  "--data.source.init_args.val_size", "400", "--data.source.init_args.max_test", "1200"), 10),
    "fmnist": Task("Fashion-MNIST binarised (label % 2; 20,000-image training subset)",
                   (*cfg("configs/data/fashion_mnist.yaml"), "--data.source.init_args.max_train", "20000"), 5),
}

TEACHERS = {
    "mpnet": ("all-mpnet-base-v2 + MLP head (bf16 pass)",
              (*cfg("configs/teacher/mpnet_mlp.yaml"), "--data.teacher.init_args.precision", "bf16")),
    # The same teacher, its pass in float32: bf16 is fast only on CPUs with native bf16 (AVX-512 BF16 / AMX; the
    # Intel Xeon the bf16 cells ran on); on an AVX2-only CPU (the AMD EPYC rt/mpnet_fp32/bag/sup ran on) it is
    # 6.3× slower than fp32 (3.7 vs 23.6 rows/s, measured).
    "mpnet_fp32": ("all-mpnet-base-v2 + MLP head (fp32 pass)", tuple(cfg("configs/teacher/mpnet_mlp.yaml"))),
    "minilm": ("all-MiniLM-L6-v2 + MLP head", tuple(cfg("configs/teacher/minilm_mlp.yaml"))),
    "cnn": ("small CNN trained by the framework", ()),  # configs/data/fashion_mnist.yaml sets it
}


@dataclass(frozen=True)
class Student:
    label: str
    args: tuple[str, ...]
    lr: float
    epochs: int
    batch_size: int


STUDENTS = {
    "mlp_minilm": Student("MLP 384→128 on MiniLM features", tuple(cfg("configs/student/mlp_minilm.yaml")),
                          1e-3, 12, 64),
    "bag": Student("hashed uni+bigram bag (2^16 buckets, 64-d)",
                   (*cfg("configs/student/hashed_bag.yaml"),
                    "--data.featurizer", json.dumps({"class_path": "lelp_lightning.data.featurizers.HashedNgramFeaturizer",
                                                     "init_args": {"num_buckets": 65536, "max_ngram": 2}})),
                   0.02, 5, 64),
    "mlp_pixels": Student("MLP 784→64 on pixels",
                          ("--data.featurizer", json.dumps({"class_path": "lelp_lightning.data.images.PixelFeaturizer",
                                                            "init_args": {"flatten": True}}),
                           "--model.student", json.dumps({"class_path": "lelp_lightning.students.MLPStudent",
                                                          "init_args": {"hidden_dims": [64]}})),
                          1e-3, 10, 128),
}

REGIMES = {
    "sup": ("supervised: every training row labeled", ()),
    "few": (f"{FEW_LABELS:,} labels, the rest a transfer set", ("--data.num_labeled", str(FEW_LABELS))),
}

# (task, teacher, student, regimes): sized so that the grid, caches excluded, fits well inside 3 h on 2 cores
CELL_SPECS = [
    ("rt", "mpnet", "mlp_minilm", ("sup", "few")),
    ("rt", "mpnet_fp32", "bag", ("sup",)),
    ("tweets2", "mpnet", "mlp_minilm", ("sup",)),
    ("tweets2", "minilm", "bag", ("sup",)),
    ("tweets3", "minilm", "bag", ("sup",)),
    ("20ng", "minilm", "bag", ("sup",)),
    ("fmnist", "cnn", "mlp_pixels", ("sup", "few")),
]
ABLATION_CELLS = ("rt/mpnet/mlp_minilm/sup", "fmnist/cnn/mlp_pixels/sup")  # cheap students: 30 runs each


@dataclass(frozen=True)
class Cell:
    task: str
    teacher: str
    student: str
    regime: str

    @property
    def name(self) -> str:
        return f"{self.task}/{self.teacher}/{self.student}/{self.regime}"

    def args(self) -> list[str]:
        s = STUDENTS[self.student]
        return [*cfg(str(BASE.relative_to(REPO))), *TASKS[self.task].args, *TEACHERS[self.teacher][1], *s.args,
                *REGIMES[self.regime][1], "--trainer.max_epochs", str(s.epochs), "--data.batch_size", str(s.batch_size)]


CELLS = {c.name: c for t, te, st, regimes in CELL_SPECS for c in (Cell(t, te, st, r) for r in regimes)}


# -- methods ----------------------------------------------------------------------------------------------------
def strategy(name: str, S: int, seed: int, **options) -> list[str]:
    return ["--data.strategy", json.dumps({"class_path": name, "init_args": {"num_subclasses": S, "seed": seed,
                                                                             **options}})]


def objectives(*terms: tuple[str, dict]) -> list[str]:
    return ["--model.objectives", json.dumps([{"class_path": n, "init_args": a} for n, a in terms])]


def subclass_ce(hp: dict) -> list[str]:
    return objectives(("subclass_ce", {"tau": hp.get("tau", 1.0), "beta": hp["beta"], "alpha": hp.get("alpha", 0.0)}))


@dataclass(frozen=True)
class Method:
    label: str
    stage: int  # 1: selected first (its choices feed stage 2)
    candidates: object  # (cell, selected: dict[method, hp]) -> list[hp]
    build: object  # (hp, seed) -> CLI args
    needs_fine: bool = False
    regimes: tuple[str, ...] = ("sup", "few")


def from_kd(sel: dict, **hp) -> dict:
    """KD's chosen learning rate and temperature τ (τ recorded only when it is not 1) and ``hp``."""
    tau = sel["kd"]["tau"]
    return {"lr": sel["kd"]["lr"], **({"tau": tau} if tau != 1.0 else {}), **hp}


def _strategy_method(label: str, name: str, **options) -> Method:
    return Method(label, 2,
                  lambda cell, sel: [from_kd(sel, S=s, beta=1.0) for s in S_GRID],
                  lambda hp, seed: strategy(name, hp["S"], seed, **options) + subclass_ce(hp))


def _lelp_args(hp: dict, seed: int) -> list[str]:
    options = {k: hp[k] for k in ("null_space", "rotation") if k in hp}
    return strategy("lelp", hp["S"], seed, **options) + subclass_ce(hp)


METHODS: dict[str, Method] = {
    "ce": Method("student alone (CE on the labels)", 1,
                 lambda cell, sel: [{"lr": STUDENTS[cell.student].lr * f} for f in LR_FACTORS],
                 lambda hp, seed: strategy("none", 1, seed) + objectives(("ce", {}))),
    "kd": Method("vanilla KD", 1,
                 lambda cell, sel: [{"lr": STUDENTS[cell.student].lr * f, "tau": t} for t in TAUS for f in LR_FACTORS],
                 lambda hp, seed: strategy("none", 1, seed) + objectives(("kd", {"temperature": hp["tau"], "alpha": 0.0}))),
    "kd_alpha": Method("vanilla KD, α = 0.5", 2, lambda cell, sel: [{**sel["kd"], "alpha": 0.5}],
                       lambda hp, seed: strategy("none", 1, seed) + objectives(
                           ("kd", {"temperature": hp["tau"], "alpha": hp["alpha"]}))),
    "fitnets": Method("embedding matching (FitNets, KD + 0.1·hint)", 2, lambda cell, sel: [sel["kd"]],
                      lambda hp, seed: strategy("none", 1, seed) + objectives(
                          ("kd", {"temperature": hp["tau"], "alpha": 0.0}),
                          ("embedding_matching", {"standardize": True, "hint_epochs": 0, "weight": 0.1}))),
    "subclass_distillation": _strategy_method("Subclass Distillation (retrained C·S head)", "subclass_distillation"),
    "lelp": Method("LELP", 2,
                   lambda cell, sel: [from_kd(sel, S=s, beta=b) for s in S_GRID for b in BETAS],
                   _lelp_args),
    "lelp_alpha": Method("LELP, α = 0.5", 2, lambda cell, sel: [{**sel["lelp"], "alpha": 0.5}], _lelp_args),
    "pca": _strategy_method("PCA only", "pca"),
    "random_projection": _strategy_method("random projections", "random_projection"),
    "kmeans": _strategy_method("k-means (hard)", "kmeans"),
    "gmm": _strategy_method("GMM (diagonal)", "gmm"),
    "random_split": _strategy_method("random split (more logits, no structure)", "random_split"),
    "oracle": Method("oracle (true hidden subclasses)", 2,
                     lambda cell, sel: [from_kd(sel, S=TASKS[cell.task].fine_per_class, beta=1.0)],
                     lambda hp, seed: strategy("oracle", hp["S"], seed) + subclass_ce(hp), needs_fine=True),
}

# LELP's selected configuration with one change each; tested on every seed
ABLATIONS = {
    "S": [{"S": s} for s in (1, 2, 4, 8, 16)],
    "beta": [{"beta": b} for b in (0.25, 0.5, 1.0, 2.0, 4.0)],
    "null_space": [{"null_space": False}],
    "rotation": [{"rotation": "none"}],
}


def methods_for(cell: Cell) -> list[str]:
    return [m for m, spec in METHODS.items()
            if (not spec.needs_fine or TASKS[cell.task].fine_per_class) and cell.regime in spec.regimes]


# -- runs and records -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    cell: str
    method: str
    hp: tuple  # sorted items, hashable
    seed: int
    test: bool
    phase: str = field(compare=False, default="final")

    @property
    def hp_dict(self) -> dict:
        return dict(self.hp)

    def identity(self) -> dict:
        return {"protocol": PROTOCOL, "cell": self.cell, "method": self.method, "hp": self.hp_dict,
                "seed": self.seed, "test": self.test}

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def path(self) -> Path:
        hp = "_".join(f"{k}{v}" for k, v in self.hp)
        return RECORDS / self.cell.replace("/", "__") / \
            f"{self.method}__{hp}__seed{self.seed}__{'test' if self.test else 'val'}__{self.key}.json"

    def args(self) -> list[str]:
        hp = self.hp_dict
        return [*CELLS[self.cell].args(), *METHODS[self.method].build(hp, self.seed), "--model.lr", str(hp["lr"]),
                "--seed_everything", str(self.seed),
                "--trainer.default_root_dir", str(REPO / "runs" / "accuracy" / self.key)]  # its config.yaml (git-ignored)


def make_run(cell: Cell, method: str, hp: dict, seed: int, test: bool, phase: str) -> Run:
    return Run(cell.name, method, tuple(sorted(hp.items())), seed, test, phase)


def load_records() -> list[dict]:
    out = []
    for path in sorted(RECORDS.glob("*/*.json")):
        record = json.loads(path.read_text())
        if record.get("identity", {}).get("protocol") == PROTOCOL:
            out.append(record)
    return out


def choices(cell: Cell, records: dict[str, dict]) -> tuple[dict[str, dict], list[Run]]:
    """(each method's chosen hyper-parameters so far, the validation runs named so far) for ``cell``.

    Stage-2 candidates need KD's choice (and LELP α = 0.5 needs LELP's), so they appear once it is measured.
    """
    chosen: dict[str, dict] = {}
    runs: list[Run] = []
    for stage in (1, 2):
        for method in methods_for(cell):
            spec = METHODS[method]
            if spec.stage != stage:
                continue
            try:
                candidates = spec.candidates(cell, chosen)
            except KeyError:  # a choice it builds on is not measured yet
                continue
            if len(candidates) == 1:
                chosen[method] = candidates[0]
                continue
            named = [make_run(cell, method, hp, 0, False, "select") for hp in candidates]
            runs += named
            scores = [records[r.key]["metrics"]["val_accuracy"] if r.key in records else None for r in named]
            if None not in scores:
                chosen[method] = candidates[max(range(len(scores)), key=lambda i: (scores[i], -i))]
    return chosen, runs


def plan(cells: list[Cell], seeds: int, records: dict[str, dict]) -> dict[str, list[Run]]:
    """The runs of each phase that can be named now (finals need every method's choice)."""
    phases: dict[str, list[Run]] = {"select": [], "final": [], "ablation": []}
    for cell in cells:
        chosen, select_runs = choices(cell, records)
        phases["select"] += select_runs
        if set(chosen) != set(methods_for(cell)):
            continue
        for method in methods_for(cell):
            phases["final"] += [make_run(cell, method, chosen[method], s, True, "final") for s in range(seeds)]
        if cell.name in ABLATION_CELLS:
            for variants in ABLATIONS.values():
                for change in variants:
                    hp = {**chosen["lelp"], **change}
                    phases["ablation"] += [make_run(cell, "lelp", hp, s, True, "ablation") for s in range(seeds)]
    return phases


def git_state() -> tuple[str, bool]:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "lelp_lightning", "benchmarks/accuracy",
                                 "configs"], cwd=REPO, capture_output=True, text=True).stdout.strip())
    return sha, dirty


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "hostname": platform.node(),
            "load_avg": [round(v, 2) for v in os.getloadavg()]}


def versions() -> dict:
    return {p: importlib.metadata.version(p) for p in
            ("torch", "lightning", "torchmetrics", "numpy", "scikit-learn", "transformers")} | \
        {"python": platform.python_version()}


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lelp_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def execute(run: Run, git: tuple[str, bool], workers: int = 1) -> dict:
    """Train one run in this process and write its record; returns the record."""
    from lelp_lightning.cli import build_cli

    _quiet()
    if run.path.is_file():
        return json.loads(run.path.read_text())
    start = time.perf_counter()
    cli = build_cli(run.args(), run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data)
    fit_s = time.perf_counter() - start
    val = trainer.validate(model, datamodule=data, verbose=False)[0]
    metrics = {"val_accuracy": float(val["val/accuracy"]), "val_macro_f1": float(val["val/macro_f1"])}
    teacher = {f"val_{k}": float(v) for k, v in data.teacher_metrics("val").items()}
    if run.test:
        test = trainer.test(model, datamodule=data, verbose=False)[0]
        metrics |= {"test_accuracy": float(test["test/accuracy"]), "test_macro_f1": float(test["test/macro_f1"])}
        teacher |= {f"test_{k}": float(v) for k, v in data.teacher_metrics("test").items()}
    record = {
        "identity": run.identity(), "key": run.key, "phase": run.phase,
        "cell": run.cell, "method": run.method, "hp": run.hp_dict, "seed": run.seed,
        "metrics": metrics, "teacher": teacher, "strategy_report": data.strategy_report("val"),
        "wall_s": round(time.perf_counter() - start, 2), "fit_s": round(fit_s, 2), "epochs": trainer.current_epoch,
        "args": run.args(), "config": json.loads(json.dumps(cli.config.as_dict(), default=str)),
        "git_sha": git[0], "git_dirty": git[1], "versions": versions(), "machine": machine(),
        "threads": __import__("torch").get_num_threads(), "workers": workers,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    run.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = run.path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run.path)
    return record


def prepare(cell: Cell) -> float:
    """Build the cell's teacher pass, teacher head and student features into the cache, in this process.

    The first time per cell the seconds it took are kept in ``prepare/<cell>.json`` (a cache hit takes ~1 s).
    """
    from lelp_lightning.cli import build_cli

    _quiet()
    start = time.perf_counter()
    cli = build_cli([*cell.args(), *METHODS["ce"].build({}, 0), "--data.progress", "true",
                     "--trainer.default_root_dir", str(REPO / "runs" / "accuracy" / "prepare")], run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    seconds = time.perf_counter() - start
    path = PREPARE / f"{cell.name.replace('/', '__')}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cell": cell.name, "seconds": round(seconds, 1), "machine": machine(),
                                    "git_sha": git_state()[0], "created": datetime.datetime.now(
                                        datetime.timezone.utc).isoformat(timespec="seconds")}, indent=1))
    return seconds


def run_phase(runs: list[Run], workers: int, git: tuple[str, bool]) -> int:
    """Run what is not recorded yet; returns how many runs failed."""
    todo = [r for r in runs if not r.path.is_file()]
    failed = 0
    if not todo:
        return failed
    print(f"  {len(todo)} runs to do ({len(runs) - len(todo)} done)", flush=True)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        futures = {pool.submit(execute, run, git, workers): run for run in todo}
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run = futures[future]
            try:
                record = future.result()
            except Exception as err:  # reported, and the run stays to do; the phase stops after this round
                failed += 1
                print(f"  FAILED {run.cell} {run.method} {run.hp_dict} seed {run.seed}: {err!r}", flush=True)
                continue
            m = record["metrics"]
            shown = f"test {100 * m['test_accuracy']:.2f}" if "test_accuracy" in m else f"val {100 * m['val_accuracy']:.2f}"
            print(f"  [{i}/{len(todo)} {time.perf_counter() - started:6.0f}s] {run.cell} {run.method} "
                  f"{run.hp_dict} seed {run.seed}: {shown} ({record['wall_s']:.1f} s)", flush=True)
    return failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cell names")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phases", default="prepare,select,final,ablation")
    parser.add_argument("--list", action="store_true", help="print the plan and what is done, run nothing")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--prune", action="store_true",
                        help="delete the records the current grid no longer names (after a change of its candidates)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cells.split(",") if c not in CELLS]
    if unknown:
        parser.error(f"unknown cells {unknown}; valid: {', '.join(CELLS)}")
    cells = [CELLS[c] for c in args.cells.split(",")]
    git = git_state()
    phases = args.phases.split(",")
    if args.prune:
        records = {r["key"]: r for r in load_records()}
        named = {run.key for runs in plan(list(CELLS.values()), args.seeds, records).values() for run in runs}
        stale = [p for p in RECORDS.glob("*/*.json") if json.loads(p.read_text())["key"] not in named]
        for path in stale:
            path.unlink()
        print(f"deleted {len(stale)} records the grid no longer names")
        return
    if args.list:
        records = {r["key"]: r for r in load_records()}
        for phase, runs in plan(cells, args.seeds, records).items():
            done = sum(r.path.is_file() for r in runs)
            print(f"{phase}: {len(runs)} runs named so far, {done} done")
        return
    if "prepare" in phases:
        for cell in cells:
            print(f"prepare {cell.name}", flush=True)
            print(f"  {prepare(cell):.0f} s", flush=True)
    for phase in ("select", "final", "ablation"):
        if phase not in phases:
            continue
        while True:  # selection is two-staged: stage 2's candidates exist once stage 1 is measured
            records = {r["key"]: r for r in load_records()}
            runs = plan(cells, args.seeds, records)[phase]
            if all(r.path.is_file() for r in runs):
                break
            print(f"{phase}", flush=True)
            if run_phase(runs, args.workers, git):
                sys.exit(f"{phase}: some runs failed (above); fix them and rerun: finished runs are kept.")
    if not args.no_report:
        from report import main as report_main

        report_main()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
