"""``lelp search``: the smallest or fastest student that keeps the accuracy, found with LayerNAS on Optuna.

Every candidate architecture is an Optuna trial (one categorical parameter per layer: the value's index), scored by
a short ``lelp fit`` (``--search.epochs``) on the cached teacher outputs and ranked on validation accuracy. With
``method: layernas`` the candidates of each layer are enqueued into the study (``enqueue_trial``, skipping those
already there) and any number of processes sharing its storage run them (``study.optimize``); each process follows
the same deterministic layer-by-layer plan, so a rerun or an extra worker resumes where the study stands.
``random`` and ``tpe`` are Optuna's own samplers over the same space with the same budget of trials. At the end the
Pareto front (cost against validation accuracy), a runnable YAML for the best student under each budget, and those
students trained fully (the run's own ``trainer.max_epochs``) and tested on ``--search.seeds`` seeds (each seed sets
the weights, the batches and the strategy's own seed, as the refit of ``lelp tune`` does).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import multiprocessing
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from lelp_lightning.errors import LelpError
from lelp_lightning.fileio import atomic_write_file, atomic_write_json, locked
from lelp_lightning.runlayer.fits import fit_trial, logged_args, refit_seeds, run_folder, write_config
from lelp_lightning.runlayer.studies import Owner, has_retry, max_trials, open_storage, open_study, optimize
from lelp_lightning.runs import build_cli, flat_config, parse_group_options, split_group_args
from lelp_lightning.search.layernas import Arch, bucket_edges, bucket_of, layernas, pareto_front
from lelp_lightning.search.space import ArchSpace

log = logging.getLogger(__name__)
METHODS = ("layernas", "random", "tpe")
COSTS = ("params", "latency")
MONITOR = "val/accuracy"
_RUN_OWNED = ("trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar",
              "trainer.enable_model_summary", "data.progress", "trainer.max_epochs")


@dataclass
class SearchOptions:
    """What ``lelp search`` searches and how (``--search.<name>`` or a ``--search <file>``).

    Each field's ``help`` (its metadata) is what ``lelp search --help`` shows for it.
    """

    space: str | dict = field(default="", metadata={
        "required": True, "help": "the layers and their options: a YAML file (configs/search/) or the mapping itself"})
    method: str = field(default="layernas", metadata={
        "choices": METHODS, "help": "LayerNAS, or Optuna's random or TPE sampler over the same space as a baseline"})
    cost: str = field(default="params", metadata={
        "choices": COSTS, "help": "what a student costs: params, its parameter count; latency, the median ms of a "
                                  "forward pass of --search.latency_batch validation rows on this machine"})
    latency_batch: int = field(default=1, metadata={
        "help": "the validation rows of the forward pass that --search.cost latency times"})
    buckets: int = field(default=10, metadata={
        "help": "H, the number of cost buckets LayerNAS keeps a best candidate of"})
    epochs: int = field(default=2, metadata={
        "help": "the training epochs of a candidate's score (a short proxy; the chosen ones train fully)"})
    n_trials: int | None = field(default=None, metadata={
        "help": "the budget of random / tpe; default: LayerNAS's bound H · max|options| · L"})
    budgets: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25], metadata={
        "help": "costs, as fractions of the default architecture's cost, under which the best student is kept, "
                "written as YAML, trained fully and tested"})
    seeds: int = field(default=3, metadata={
        "help": "how many seeds the chosen students are trained and tested with (0: none)"})
    workers: int = field(default=1, metadata={
        "help": "processes on this machine sharing the study (more on other machines: the same command with the "
                "same --search.storage)"})
    storage: str | None = field(default=None, metadata={
        "help": "an Optuna storage URL; default: sqlite:///<folder>/study.db"})
    root: str = field(default="runs/search", metadata={
        "help": "the folder the search's folder <root>/<name> is in"})
    name: str | None = field(default=None, metadata={
        "help": "the search's folder under --search.root; default: the first --config's stem and the method"})
    seed: int = field(default=0, metadata={"help": "the samplers' seed"})
    heartbeat_interval: int = field(default=10, metadata={
        "help": "seconds between a running trial's heartbeats in the storage"})
    grace_period: int = field(default=30, metadata={
        "help": "seconds without a heartbeat after which a killed worker's trial is marked failed and retried once "
                "with the same architecture"})
    space_source: str | dict = field(init=False, repr=False)  # ``space`` as given; ``space`` becomes the ArchSpace

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LelpError(f"search method must be one of {METHODS}, got {self.method!r}.")
        if self.cost not in COSTS:
            raise LelpError(f"search cost must be one of {COSTS}, got {self.cost!r}.")
        for option in ("buckets", "epochs", "workers", "latency_batch"):
            value = getattr(self, option)
            if int(value) != value or value < 1:
                raise LelpError(f"search {option} must be an integer >= 1, got {value}.")
            setattr(self, option, int(value))
        if not self.budgets or any(not 0 < b <= 1 for b in self.budgets):
            raise LelpError(f"search budgets must be fractions of the default's cost in (0, 1], got "
                            f"{list(self.budgets)}.")
        if not self.space:
            raise LelpError("lelp search needs --search.space: a YAML file with the layers and their options "
                            "(see configs/search/).")
        self.budgets = sorted(set(self.budgets), reverse=True)
        self.space_source = self.space
        self.space = ArchSpace.from_dict(self.space) if isinstance(self.space, dict) else ArchSpace.load(self.space)

    def trial_budget(self) -> int:
        return self.n_trials or self.buckets * max(self.space.num_options) * len(self.space.layers)


def split_search_args(args: list[str]) -> tuple[list[str], list[str]]:
    return split_group_args(args, "search")


def parse_options(search_args: list[str]) -> SearchOptions:
    return parse_group_options(SearchOptions, "search", search_args)


def measure_cost(cli, kind: str, batch: int) -> dict:
    """The student's parameter count and forward latency (median ms over 30 passes of ``batch`` validation rows)."""
    student = cli.model.student
    params = sum(p.numel() for p in student.parameters())
    out = {"params": int(params)}
    if kind == "latency":
        data = cli.datamodule
        data.setup()
        inputs = data.dataset("val").__getitems__(list(range(min(batch, len(data.split_cache("val"))))))["inputs"]
        was_training = student.training
        student.eval()
        times = []
        with torch.inference_mode():
            for i in range(35):
                start = time.perf_counter()
                student(inputs)
                if i >= 5:
                    times.append(1000 * (time.perf_counter() - start))
        student.train(was_training)
        out["latency_ms"] = statistics.median(times)
    out["cost"] = float(out["latency_ms"] if kind == "latency" else out["params"])
    return out


class Search:
    """The user's run, the space and the study: candidates, their scores and the report."""

    def __init__(self, args: list[str], options: SearchOptions):
        self.args, self.options = list(args), options
        cli = build_cli([*args, "--data.progress", "false"], run=False)  # bad input fails here
        self.space = options.space
        self.space.check_against({"model.student": type(cli.model.student),
                                  "data.featurizer": type(cli.datamodule.featurizer)})
        config = cli.config.as_dict()
        self.defaults = {"model.student": (config["model"]["student"] or {}).get("init_args", {}),
                         "data.featurizer": ((config["data"].get("featurizer") or {}).get("init_args", {}))}
        self.full_epochs = int(cli.config.trainer.max_epochs or 1)
        self.folder = run_folder(args, options.root, options.name, f"-{options.method}")
        self.identity = {"config": flat_config(cli, _RUN_OWNED), "space": self.space.fingerprint(),
                         "cost": options.cost, "latency_batch": options.latency_batch, "epochs": options.epochs,
                         "method": options.method}
        self.datamodule = cli.datamodule
        del cli

    # -- the cache, the costs ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        data = self.datamodule
        data.cache.root.mkdir(parents=True, exist_ok=True)
        with locked(data.cache.root / ".search-prepare.lock"):
            data.prepare_data()
        self.datamodule = None

    def arch_args(self, arch: Arch) -> list[str]:
        return [*self.args, *self.space.overrides(arch, self.defaults)]

    def cost_of(self, arch: Arch) -> dict:
        cli = build_cli([*self.arch_args(arch), "--data.progress", "false"], run=False)
        try:
            return measure_cost(cli, self.options.cost, self.options.latency_batch)
        finally:
            del cli
            gc.collect()

    def extremes(self) -> tuple[dict, dict]:
        """The costs of the default architecture (every layer's first value) and of the last value everywhere."""
        path = self.folder / "extremes.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            return saved["default"], saved["smallest"]
        default, smallest = self.cost_of(tuple(0 for _ in self.space.layers)), \
            self.cost_of(tuple(n - 1 for n in self.space.num_options))
        atomic_write_json(path, {"default": default, "smallest": smallest})
        return default, smallest

    # -- the study ---------------------------------------------------------------------------------------------
    def open_study(self) -> optuna.Study:
        self.folder.mkdir(parents=True, exist_ok=True)
        options = self.options
        storage = open_storage(options.storage, self.folder, options.heartbeat_interval, options.grace_period)
        sampler = (optuna.samplers.TPESampler(seed=options.seed, multivariate=True) if options.method == "tpe"
                   else optuna.samplers.RandomSampler(seed=options.seed))
        owner = Owner("identity", self.identity, "base config, space, cost or method",
                      "--search.name or --search.root")
        return open_study(storage, self.folder.name, options.storage or self.folder / "study.db", owner, sampler)

    def objective(self, trial: optuna.Trial) -> float:
        if self.options.method == "layernas" and not trial.user_attrs.get("candidate"):
            trial.set_user_attr("surplus", True)  # another worker took the candidate this process meant to run
            raise optuna.TrialPruned("no enqueued candidate was left")
        arch = tuple(trial.suggest_categorical(layer.name, list(range(len(layer.values))))
                     for layer in self.space.layers)
        trial.set_user_attr("values", self.space.values(arch))
        # a candidate's weights are not kept: the chosen ones are trained again fully
        logs = logged_args(self.folder, "trials", f"trial_{trial.number:04d}", root_dir=self.folder / "trials")
        return fit_trial([*self.arch_args(arch), "--trainer.max_epochs", str(self.options.epochs), *logs], MONITOR,
                         trial.set_user_attr,
                         measure=lambda cli: measure_cost(cli, self.options.cost, self.options.latency_batch))

    def run_enqueued(self, study: optuna.Study, archs: list[Arch]) -> dict[Arch, tuple[float, float]]:
        """Enqueue ``archs`` (those not in the study yet, marked as candidates) and run waiting trials until every
        one has finished."""
        names = [layer.name for layer in self.space.layers]
        for arch in archs:
            study.enqueue_trial(dict(zip(names, arch, strict=True)), user_attrs={"candidate": True},
                                skip_if_exists=True)
        while True:
            done = scores_of(study, names)
            if all(a in done for a in archs):
                if all(done[a][1] == -math.inf for a in archs):
                    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                    errors = [t.user_attrs.get("error") for t in failed]
                    raise LelpError(f"every candidate of this layer failed to train (the first: "
                                    f"{next((e for e in errors if e), 'no error recorded')}); check the run config "
                                    "with `lelp fit` first.")
                return {a: done[a] for a in archs}
            if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                optimize(study, self.objective, n_trials=1)
            else:  # the rest runs in other processes; a killed one's trial is failed (and retried) once it is stale
                optuna.storages.fail_stale_trials(study)
                time.sleep(1)

    def search(self, study: optuna.Study, edges: list[float]) -> None:
        if self.options.method == "layernas":
            layernas(self.space.num_options, self.options.buckets, edges,
                     lambda archs: self.run_enqueued(study, archs))
            return
        counted = (TrialState.COMPLETE, TrialState.FAIL)
        if len(study.get_trials(deepcopy=False, states=counted)) < self.options.trial_budget():
            optimize(study, self.objective, [max_trials(self.options.trial_budget(), counted)])


def scores_of(study: optuna.Study, names: list[str]) -> dict[Arch, tuple[float, float]]:
    """(cost, validation accuracy) of every finished candidate; a failed one scores −∞ (never kept)."""
    out: dict[Arch, tuple[float, float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.user_attrs.get("surplus") or not all(n in t.params for n in names):
            continue
        arch = tuple(t.params[n] for n in names)
        if t.state == TrialState.COMPLETE:
            out[arch] = (float(t.user_attrs["cost"]), float(t.value))
        elif arch not in out and not has_retry(study, t):  # a trial failed by the heartbeat is retried once
            out[arch] = (math.inf, -math.inf)
    return out


def _worker(args: list[str], search_args: list[str]) -> None:
    search = Search(args, parse_options(search_args))
    study = search.open_study()
    default, smallest = search.extremes()
    search.search(study, bucket_edges(smallest["cost"], default["cost"], search.options.buckets))


def run_search(args: list[str], options: SearchOptions, search_args: list[str] | None = None) -> dict:
    """The whole of ``lelp search``: prepare the cache, search (``workers`` processes), report, train the chosen."""
    search = Search(args, options)
    search.prepare()
    study = search.open_study()
    default, smallest = search.extremes()
    cheapest = min(options.budgets) * default["cost"]
    if cheapest < smallest["cost"]:
        raise LelpError(f"the budget {min(options.budgets)} × the default's cost ({default['cost']:.4g} "
                        f"{options.cost}) = {cheapest:.4g} is below every candidate's cost (the smallest architecture "
                        f"costs {smallest['cost']:.4g}); expected budgets of at least "
                        f"{smallest['cost'] / default['cost']:.3g}.")
    edges = bucket_edges(smallest["cost"], default["cost"], options.buckets)
    others = []
    if options.workers > 1:
        context = multiprocessing.get_context("spawn")
        others = [context.Process(target=_worker, args=(args, [*(search_args or []), "--search.workers", "1"]))
                  for _ in range(options.workers - 1)]
        for p in others:
            p.start()
    try:
        search.search(study, edges)
    finally:
        for p in others:
            p.join()
    return report(search, study, default, edges)


def report(search: Search, study: optuna.Study, default: dict, edges: list[float]) -> dict:
    """front.csv / front.png, a YAML per budget, and the chosen students trained fully and tested (resumable)."""
    import pandas as pd

    names = [layer.name for layer in search.space.layers]
    scores = {a: s for a, s in scores_of(study, names).items() if s[1] > -math.inf}
    front = set(pareto_front(scores))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials = {tuple(t.params[n] for n in names): t for t in complete if all(n in t.params for n in names)}
    rows = []
    for arch, (cost, value) in sorted(scores.items(), key=lambda item: item[1][0]):
        t = trials[arch]
        rows.append({"trial": t.number, **search.space.values(arch), "cost": cost, "params": t.user_attrs["params"],
                     "latency_ms": t.user_attrs.get("latency_ms"), "val_accuracy": value, "pareto": arch in front,
                     "bucket": bucket_of(cost, edges), "wall_s": t.user_attrs.get("wall_s")})
    frame = pd.DataFrame(rows)
    atomic_write_file(search.folder / "front.csv", lambda tmp: frame.to_csv(tmp, index=False))
    plot_front(frame, default, search.options.cost, search.folder / "front.png", search.options.method)
    chosen = []
    for budget in search.options.budgets:
        affordable = {a: s for a, s in scores.items() if s[0] <= budget * default["cost"] * (1 + 1e-9)}
        if not affordable:
            chosen.append({"budget": budget, "arch": None})
            continue
        arch = max(affordable, key=lambda a: (affordable[a][1], -affordable[a][0]))
        chosen.append({"budget": budget, "arch": arch, "values": search.space.values(arch),
                       "cost": affordable[arch][0], "val_accuracy": affordable[arch][1],
                       "yaml": str(best_yaml(search, arch, budget))})
    results = train_chosen(search, chosen)
    summary = {"method": search.options.method, "trials": len(study.trials), "finished": len(scores),
               "default_cost": default["cost"], "cost": search.options.cost, "chosen": results}
    atomic_write_json(search.folder / "search.json", summary, default=str)
    print(format_summary(summary, search.folder))
    return summary


def best_yaml(search: Search, arch: Arch, budget: float) -> Path:
    """``best_<budget>.yaml``: the chosen architecture as a runnable config whose runs are named after the search
    (``runs/<search>/version_N``)."""
    path = search.folder / f"best_{budget:g}.yaml"
    return write_config(path, [*search.arch_args(arch), "--trainer.max_epochs", str(search.full_epochs),
                               "--trainer.default_root_dir", str(search.folder / f"budget_{budget:g}")],
                        f"lelp search: the best student within {budget:g} × the default's {search.options.cost} "
                        f"({search.space.values(arch)}); run it with: lelp fit --config {path.name}",
                        name=search.folder.name)


def train_chosen(search: Search, chosen: list[dict]) -> list[dict]:
    """Each budget's student trained with the run's full epochs on ``seeds`` seeds, tested once each (kept on disk;
    an architecture chosen under several budgets is trained once)."""
    path = search.folder / "chosen.json"
    done = {(json.dumps(r["values"], sort_keys=True), r["seed"]): r
            for r in (json.loads(path.read_text()) if path.is_file() else [])}
    for entry in chosen:
        if entry["arch"] is None:
            continue
        values = json.dumps(entry["values"], sort_keys=True)

        def keep(seed: int, summary: dict, entry=entry, values=values) -> None:
            done[values, seed] = {"values": entry["values"], "seed": seed,
                                  "test_accuracy": summary["student"]["test_accuracy"]}
            atomic_write_json(path, list(done.values()))

        refit_seeds(entry["yaml"], search.options.seeds, search.folder, f"budget_{entry['budget']:g}",
                    {seed for v, seed in done if v == values}, keep)
        accs = [done[values, seed]["test_accuracy"] for seed in range(search.options.seeds)]
        if accs:
            entry["test_accuracy"] = [statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0]
    return chosen


def plot_front(frame, default: dict, cost: str, out: Path, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(frame):
        ax.scatter(frame["cost"], 100 * frame["val_accuracy"], s=14, alpha=0.5, label=f"{method} candidates")
        front = frame[frame["pareto"]].sort_values("cost")
        ax.step(front["cost"], 100 * front["val_accuracy"], where="post", color="black", label="Pareto front")
    ax.axvline(default["cost"], color="grey", linestyle=":", label="default")
    ax.set_xscale("log")
    ax.set_xlabel(cost)
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_file(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def format_summary(summary: dict, folder: Path) -> str:
    lines = [f"lelp search ({summary['method']}): {summary['finished']} candidates scored; default "
             f"{summary['cost']} {summary['default_cost']:.4g}",
             f"{'budget':<8}{'cost':>14}{'val acc':>9}{'test acc':>18}  architecture"]
    for c in summary["chosen"]:
        if c["arch"] is None:
            lines.append(f"{c['budget']:<8g}  no candidate within the budget")
            continue
        test = c.get("test_accuracy")
        shown = f"{100 * test[0]:.2f} ± {100 * test[1]:.2f}" if test else "–"
        lines.append(f"{c['budget']:<8g}{c['cost']:>14.4g}{100 * c['val_accuracy']:>8.2f}%{shown:>18}  {c['values']}")
    lines.append(f"front, YAMLs and results in {folder}")
    return "\n".join(lines)

