"""``lelp active``: distil under a budget of teacher queries, spent in rounds on the rows a selector picks.

Round 0 trains the student on the labeled rows (the teacher, fitted on them, also runs on the validation and
test rows once). Round r = 1 … R scores the unqueried pool with the current student, lets the selector pick
b_r rows, runs the teacher on exactly those (:class:`~lelp_lightning.active.pool.QueryStore`), and continues
training the student on the labeled rows plus every row kept so far, with a strategy refitted on them. After the
last round the student is tested once.

Everything a round decides is on disk before the next step reads it, each file written atomically:
``round_NN/selection.npz`` (the queried positions and the student's probabilities on them, then the kept ones),
the teacher's outputs in the query store, ``round_NN/student.pt`` and ``round_NN/round.json``. A killed run
resumes at the step it was in: a query resumes block by block, and a round whose training was cut short is
retrained from the previous round's weights, so the queried set and the final weights are those of an
uninterrupted run and no row is queried twice.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lelp_lightning.active.pool import QueriedTeacher, QueryStore, RoundFeaturizer, RoundSource, pool_positions
from lelp_lightning.active.selectors import RobustSelector, RoundView, Selector
from lelp_lightning.core import FINAL
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.errors import LelpError
from lelp_lightning.fileio import atomic_write, atomic_write_json
from lelp_lightning.runlayer.fits import drop_checkpoints, fit_and_score, logged_args, run_folder
from lelp_lightning.runs import build_cli, flat_config, parse_group_options, split_group_args

log = logging.getLogger(__name__)
MONITOR = "val/accuracy"
_RUN_OWNED = ("trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar",
              "trainer.enable_model_summary", "data.progress")


@dataclass
class ActiveOptions:
    """What ``lelp active`` spends and how (``--active.<name>`` or an ``--active <file>``).

    Each field's ``help`` (its metadata) is what ``lelp active --help`` shows for it.
    """

    selector: Selector | None = field(default=None, metadata={
        "help": "which pool rows to query: a registered name (rad, random, margin, entropy, "
                "confident_teacher_uncertain_student) or {class_path, init_args}; default: rad"})
    budget: float = field(default=0.3, metadata={
        "help": "teacher queries on the pool: a fraction of it (0 < budget ≤ 1) or a number of rows (> 1)"})
    rounds: int = field(default=3, metadata={
        "help": "how many rounds the budget is spent in (budget / rounds rows each, the remainder going to the "
                "first rounds)"})
    root: str = field(default="runs/active", metadata={"help": "the folder the run's folder <root>/<name> is in"})
    name: str | None = field(default=None, metadata={
        "help": "the run's folder under --active.root; default: the first --config's stem and the selector's name"})
    seed: int = field(default=0, metadata={"help": "seeds the selectors' random draws (round r draws with (seed, r))"})
    progress: bool = field(default=True, metadata={
        "help": "progress bars of the teacher's queries and of training"})

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise LelpError(f"active budget must be a fraction of the pool in (0, 1] or a number of rows > 1, "
                            f"got {self.budget}.")
        if self.budget > 1 and self.budget != int(self.budget):
            raise LelpError(f"an active budget above 1 is a number of rows and must be a whole number, got "
                            f"{self.budget}.")
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise LelpError(f"active rounds must be an integer >= 1, got {self.rounds}.")
        self.selector = self.selector or RobustSelector()
        self.rounds = int(self.rounds)

    def budget_rows(self, pool: int) -> int:
        rows = round(self.budget * pool) if self.budget <= 1 else int(self.budget)
        if rows > pool:
            raise LelpError(f"the active budget of {rows} teacher queries exceeds the pool of {pool} unlabeled rows; "
                            "expected at most the pool (or a fraction of it, 0 < budget <= 1).")
        if rows // self.rounds < 1:
            raise LelpError(f"an active budget of {rows} queries over {self.rounds} rounds gives fewer than one row a "
                            f"round (b < 1); expected a budget of at least {self.rounds} rows, or fewer rounds.")
        return rows

    def schedule(self, pool: int) -> list[int]:
        """b_r for rounds 1 … R: the budget split as evenly as whole rows allow."""
        rows = self.budget_rows(pool)
        return [rows // self.rounds + (r < rows % self.rounds) for r in range(self.rounds)]


def split_active_args(args: list[str]) -> tuple[list[str], list[str]]:
    return split_group_args(args, "active")


def parse_options(active_args: list[str]) -> ActiveOptions:
    return parse_group_options(ActiveOptions, "active", active_args)


def _save_arrays(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))  # a file object: savez adds no ``.npz`` to the name


def _write_json(path: Path, payload: dict) -> None:
    atomic_write_json(path, payload, default=str)


@torch.inference_mode()
def student_probabilities(model, inputs, positions: np.ndarray, batch_size: int) -> np.ndarray:
    """The student's class probabilities [n, C] on the rows ``positions`` of ``inputs``."""
    was_training = model.training
    model.eval()
    out = [torch.softmax(model.class_logits(inputs.gather(positions[lo:lo + batch_size])).float(), -1).numpy()
           for lo in range(0, len(positions), batch_size)]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


class ActiveRun:
    """One active distillation run: its folder, its teacher queries and its rounds."""

    def __init__(self, args: list[str], options: ActiveOptions):
        self.args, self.options = list(args), options
        quiet = [] if options.progress else ["--data.progress", "false"]
        cli = build_cli([*args, *quiet], run=False)  # bad input fails here, before anything is written
        data = cli.datamodule
        if data.num_labeled is None:
            raise LelpError("active distillation needs an unlabeled pool: set data.num_labeled to the number of "
                            "training rows that keep their labels (the others are the pool the teacher is queried on).")
        if data.representation != FINAL:
            raise LelpError(f"active distillation queries the teacher's final layer only; data.representation must be "
                            f"{FINAL!r}, got {data.representation!r}.")
        self.data = data
        self.labeled = data.labeled_rows
        self.pool = pool_positions(len(data.source.split("train")), self.labeled)
        if len(self.pool) == 0:
            raise LelpError(f"data.num_labeled={data.num_labeled} labels every training row, so there is no unlabeled "
                            "pool to query; expected num_labeled below the number of training rows.")
        self.schedule = options.schedule(len(self.pool))
        self.folder = run_folder(args, options.root, options.name, f"-{options.selector.registered_name}")
        config = flat_config(cli, _RUN_OWNED)
        self.record = {"config": config, "selector": options.selector.describe(), "budget": options.budget,
                       "rounds": options.rounds, "seed": options.seed}
        self.fingerprint = hashlib.sha256(json.dumps(self.record, sort_keys=True, default=str)
                                          .encode()).hexdigest()[:16]
        self.store = QueryStore(data.cache, data.teacher, data.source, self.labeled)
        del cli

    # -- the folder --------------------------------------------------------------------------------------------
    def claim_folder(self) -> None:
        """Create the run's folder, or resume the one this very run (config, selector, budget) left."""
        state = self.folder / "active.json"
        if state.is_file():
            made_for = json.loads(state.read_text()).get("fingerprint")
            if made_for != self.fingerprint:
                raise LelpError(f"{self.folder} holds an active run of another config, selector or budget "
                                f"(fingerprint {made_for}, this run's {self.fingerprint}); give this one its own "
                                "--active.name or --active.root.")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(state, {"fingerprint": self.fingerprint, **self.record})

    def round_dir(self, r: int) -> Path:
        return self.folder / f"round_{r:02d}"

    # -- one round -----------------------------------------------------------------------------------------------
    def round_cli(self, r: int):
        logs = logged_args(self.folder, "rounds", f"round_{r:02d}", self.round_dir(r), self.options.progress)
        return build_cli([*self.args, *logs], run=False)

    def round_data(self, cli, rows: np.ndarray) -> DistillDataModule:
        """The round's data module: the config's, on the labeled + kept rows and the queried teacher; the strategy
        is the round's own (fresh, so it is refitted on these rows)."""
        d = self.data
        return DistillDataModule(
            source=RoundSource(d.source, rows, self.labeled), teacher=QueriedTeacher(self.store),
            strategy=cli.datamodule.strategy, featurizer=RoundFeaturizer(d.featurizer, d.source, rows),
            cache_dir=str(d.cache.root), batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
            fit_labels=d.targets.fit_labels, num_workers=d.num_workers, progress=d.progress,
            representation=FINAL, probe=d.probe)

    def load_student(self, model, r: int) -> None:
        model.student.load_state_dict(torch.load(self.round_dir(r) / "student.pt", weights_only=True))

    def select(self, r: int, model) -> dict:
        """Round r's queried and kept positions (training-split positions), chosen once and kept on disk."""
        path = self.round_dir(r) / "selection.npz"
        if path.is_file():
            with np.load(path) as saved:
                selection = {k: saved[k] for k in saved.files}
        else:
            unqueried = np.setdiff1d(self.pool, self.queried_before(r))
            probabilities = student_probabilities(model, self.pool_inputs, unqueried, self.data.eval_batch_size)
            view = RoundView(probabilities, self.schedule[r - 1], np.random.default_rng([self.options.seed, r]),
                             self.store.teacher_error("val"))
            picked = np.asarray(self.options.selector.select(view), np.int64)
            if (len(np.unique(picked)) != view.batch or picked.min(initial=0) < 0
                    or picked.max(initial=0) >= len(unqueried)):
                raise RuntimeError(f"selector {self.options.selector.registered_name!r} returned "
                                   f"{len(np.unique(picked))} distinct valid rows; round {r} needs exactly "
                                   f"{view.batch}.")
            selection = {"queried": unqueried[picked], "student": probabilities[picked]}
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_arrays(path, selection)
        if "kept" not in selection:
            before = (self.store.spent.rows, self.store.spent.seconds)
            self.store.query(selection["queried"], self.options.progress)
            train = self.data.source.split("train")
            teacher = softmax(self.store.lookup("train", train.row_ids[selection["queried"]])[1])
            kept = self.options.selector.keep(selection["queried"], selection["student"], teacher)
            selection["kept"] = np.sort(np.asarray(kept, np.int64))
            selection["encoded"] = np.array([self.store.spent.rows - before[0], self.store.spent.seconds - before[1]])
            _save_arrays(path, selection)
        return selection

    def queried_before(self, r: int) -> np.ndarray:
        done = [np.load(self.round_dir(q) / "selection.npz")["queried"] for q in range(1, r)]
        return np.concatenate(done) if done else np.zeros(0, np.int64)

    def train_round(self, r: int, rows: np.ndarray, cli, model) -> dict:
        start = time.perf_counter()
        data = self.round_data(cli, rows)
        shutil.rmtree(self.folder / "rounds" / f"round_{r:02d}", ignore_errors=True)  # a round cut short: its logs
        value = fit_and_score(cli.trainer, model, data, MONITOR)
        folder = self.round_dir(r)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "student.pt", lambda f: torch.save(model.student.state_dict(), f))
        drop_checkpoints(cli.trainer)  # the round's Lightning checkpoints: the student's weights are kept above
        return {"data": data, "val_accuracy": value, "train_seconds": round(time.perf_counter() - start, 2)}

    # -- the whole run -------------------------------------------------------------------------------------------
    def prepare(self) -> dict:
        """The teacher over the labeled, validation and test rows and the student's inputs for the whole pool."""
        seed = self.folder / "teacher_seed.json"
        self.store.prepare(self.options.progress)
        if not seed.is_file():
            _write_json(seed, {"rows_encoded": self.store.spent.rows, "seconds": round(self.store.spent.seconds, 2)})
        self.data.featurizer.prepare(self.data.source, self.data.cache)
        self.pool_inputs = self.data.featurizer.featurize(self.data.source, "train", self.data.cache)
        return json.loads(seed.read_text())

    def run(self) -> dict:
        summary_path = self.folder / "summary.json"
        self.claim_folder()
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            print(format_summary(summary, summary_path))
            return summary
        start = time.perf_counter()
        seed = self.prepare()
        rounds, kept = [], np.zeros(0, np.int64)
        cli = model = data = None
        for r in range(self.options.rounds + 1):
            record_path = self.round_dir(r) / "round.json"
            if r > 0 and (self.round_dir(r) / "selection.npz").is_file() and record_path.is_file():
                kept = np.union1d(kept, np.load(self.round_dir(r) / "selection.npz")["kept"])
            if record_path.is_file():
                rounds.append(json.loads(record_path.read_text()))
                continue
            cli = self.round_cli(r)
            model, encoded = cli.model, (0, 0.0)
            if r > 0:
                self.load_student(model, r - 1)
                selection = self.select(r, model)
                kept, encoded = np.union1d(kept, selection["kept"]), selection["encoded"]
            rows = np.union1d(self.labeled, kept)
            trained = self.train_round(r, rows, cli, model)
            data = trained.pop("data")
            record = {"round": r, "queried": 0 if r == 0 else int(self.schedule[r - 1]),
                      "queried_total": int(sum(self.schedule[:r])), "kept_total": int(len(kept)),
                      "train_rows": int(len(rows)), "teacher_rows_encoded": int(encoded[0]),
                      "teacher_seconds": round(float(encoded[1]), 2), **trained}
            _write_json(record_path, record)
            rounds.append(record)
            if r < self.options.rounds:
                cli = model = data = None
                gc.collect()
        if data is None:  # every round was trained before this process: test the last round's student
            cli = self.round_cli(self.options.rounds)
            model, data = cli.model, self.round_data(cli, np.union1d(self.labeled, kept))
            self.load_student(model, self.options.rounds)
        tested = cli.trainer.test(model, datamodule=data, verbose=False)[0]
        teacher = data.teacher_metrics("test")
        needed = len(self.labeled) + sum(len(self.data.source.split(s)) for s in ("val", "test")) + sum(self.schedule)
        summary = {
            "selector": self.options.selector.describe(), "pool": int(len(self.pool)),
            "labeled": int(len(self.labeled)), "budget": int(sum(self.schedule)), "rounds": rounds,
            "queried_fraction": sum(self.schedule) / len(self.pool),
            "student": {"test_accuracy": float(tested["test/accuracy"]),
                        "test_macro_f1": float(tested["test/macro_f1"])},
            "teacher": {"test_accuracy": teacher["teacher_accuracy"], "val_error": self.store.teacher_error("val")},
            "teacher_rows_needed": int(needed),
            "teacher_rows_encoded": int(seed["rows_encoded"] + sum(r["teacher_rows_encoded"] for r in rounds)),
            "teacher_seconds": round(seed["seconds"] + sum(r["teacher_seconds"] for r in rounds), 2),
            "wall_seconds_last_process": round(time.perf_counter() - start, 2),
        }
        _write_json(summary_path, summary)
        print(format_summary(summary, summary_path))
        return summary


def format_summary(summary: dict, path: Path) -> str:
    lines = [f"active distillation ({summary['selector']['name']}): {summary['budget']} teacher queries on a pool of "
             f"{summary['pool']} rows ({100 * summary['queried_fraction']:.1f}%), {summary['labeled']} labeled rows",
             f"{'round':<7}{'queried':>9}{'train rows':>12}{'val acc':>9}"]
    for record in summary["rounds"]:
        lines.append(f"{record['round']:<7}{record['queried_total']:>9}{record['train_rows']:>12}"
                     f"{100 * record['val_accuracy']:>8.2f}%")
    lines.append(f"test accuracy: student {100 * summary['student']['test_accuracy']:.2f}%, teacher "
                 f"{100 * summary['teacher']['test_accuracy']:.2f}%")
    lines.append(f"teacher: {summary['teacher_rows_needed']} rows needed (labeled, val, test, queries), "
                 f"{summary['teacher_rows_encoded']} encoded by this run in {summary['teacher_seconds']:.1f} s; "
                 f"summary written to {path}")
    return "\n".join(lines)


def run_active(args: list[str], options: ActiveOptions) -> dict:
    """The whole of ``lelp active`` (resumable: the same command continues an interrupted run)."""
    return ActiveRun(args, options).run()

