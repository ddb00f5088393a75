"""The grid's peers: model2vec and SetFit trained on the grid's own splits, reported as rows of its cells.

    .venv/bin/python -m benchmarks.accuracy.peers --cells tweets2/minilm/bag_sparse/sup --seeds 3
    .venv/bin/python -m benchmarks.accuracy.peers --list     # what would run and what is done
    .venv/bin/python -m benchmarks.report                    # then RESULTS.md shows them beside the methods

- ``model2vec``: the cell's teacher encoder (``spec.TEACHER_ENCODERS``: MiniLM for the MiniLM and fine-tuned
  MiniLM teachers, all-mpnet-base-v2 for the mpnet ones) distilled by ``model2vec.distill.distill`` (PCA 256, the
  static student's options: the very table the ``static`` student starts from, distilled once per encoder into
  ``.lelp_cache`` by ``StaticTokenFeaturizer``), then ``StaticModelForClassification.from_static_model`` fitted
  with its defaults (learning rate, batch size, early stopping with patience 5), the grid's validation rows as its
  validation set, on the CPU. Every text cell.
- ``setfit`` (setfit 1.2.0): the bundled all-MiniLM-L6-v2 as the body, a logistic-regression head, its defaults
  except ``SETFIT_OPTIONS`` (10 pairs per labeled row, for cost). The text cells of the few-label regime: it is a
  few-shot method, and its default pair sampling grows with the square of the labeled rows.

Both train on the cell's labeled training rows (every training row in the supervised regime, the grid's
``FEW_LABELS`` rows in the few-label regime): they have no teacher, so the transfer set is of no use to them. The
rows are the grid's: the splits come from the data module that the cell's own arguments build through
``build_cli`` (its source, and ``DistillDataModule.labeled_rows``, i.e. ``choose_labeled_rows``), so the
train / validation / test rows are the ones its runs read.

A peer run is (peer, task, regime, encoder, options, seed), not a cell: the cells that share task, regime and
teacher encoder share its records (tweets2/minilm/bag_sparse/sup and tweets2/minilm_ft/bag_sparse/sup both show
the MiniLM model2vec). Each run writes one immutable JSON record under ``benchmarks/results/accuracy/peers/``
(atomically; an existing record is skipped, so a rerun resumes): git sha, machine, versions, seed, options,
metrics, training and wall seconds. Runs go one at a time, one torch thread, like the grid's workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import provenance
from benchmarks.accuracy import grid, spec

RECORDS = spec.REPO / "benchmarks" / "results" / "accuracy" / "peers"
CACHE = spec.REPO / ".lelp_cache"  # base.yaml's data.cache_dir: the static student's tables are distilled there
PROTOCOL = 1  # bump when a change makes old peer records incomparable (they are then ignored, not deleted)
CODE = ("benchmarks/accuracy", "lelp_lightning/sources", "lelp_lightning/data/labels.py", "configs/data")

PEERS = {
    "model2vec": "model2vec of the teacher's encoder (PCA 256) + its classifier",
    "setfit": "SetFit (all-MiniLM-L6-v2 body, logistic regression)",
}
MODEL2VEC_OPTIONS = {"pca_dims": 256}
SETFIT_BODY = "all-MiniLM-L6-v2"
# SetFit's default pair sampling ("oversampling") makes max(positive, negative) pairs of each kind: ~500,000 pairs,
# ~31,000 steps of 16 for 1,000 binary labels. num_iterations n makes 2n pairs per labeled row instead: the SetFit
# paper's 20 is 40,000 pairs, 2,500 steps; 5 is 10,000 pairs, 625 steps, each labeled row still in ~20 pairs. A
# step of the MiniLM body took 2.4 s on one thread of the 2-core AMD EPYC, loaded (rt's 1,000 labeled rows): ~25 min
# per seed with 5, ~1.7 h with 20, ~21 h with the defaults; 5 is what fits this machine
SETFIT_OPTIONS = {"num_iterations": 5}
SETFIT_REGIMES = ("few",)


@dataclass(frozen=True)
class PeerRun:
    peer: str
    task: str
    regime: str
    encoder: str
    options: tuple  # sorted items, hashable
    seed: int

    def identity(self) -> dict:
        return {"protocol": PROTOCOL, "peer": self.peer, "task": self.task, "regime": self.regime,
                "encoder": self.encoder, "options": dict(self.options), "seed": self.seed}

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def path(self) -> Path:
        name = f"{self.peer}__{Path(self.encoder).name}__seed{self.seed}__{self.key}.json"  # a folder: its name
        return RECORDS / f"{self.task}__{self.regime}" / name


def runs_for(cell: spec.Cell, seeds: int) -> list[PeerRun]:
    """The peer runs of ``cell`` (none for a cell whose teacher reads no text)."""
    encoder = spec.TEACHER_ENCODERS.get(cell.teacher)
    if encoder is None:
        return []
    runs = [PeerRun("model2vec", cell.task, cell.regime, encoder, tuple(sorted(MODEL2VEC_OPTIONS.items())), s)
            for s in range(seeds)]
    if cell.regime in SETFIT_REGIMES:
        runs += [PeerRun("setfit", cell.task, cell.regime, SETFIT_BODY, tuple(sorted(SETFIT_OPTIONS.items())), s)
                 for s in range(seeds)]
    return runs


# -- the rows ---------------------------------------------------------------------------------------------------
def splits(cell: spec.Cell) -> dict:
    """``{split: SplitData}`` of ``cell``'s runs, the training split cut to its labeled rows.

    Built as the grid builds a run (``build_cli`` on the cell's arguments, here with the student alone as the
    method); only the source is read: no teacher pass, no features.
    """
    from lelp_lightning.cli import build_cli

    grid._quiet()
    with tempfile.TemporaryDirectory() as root:
        cli = build_cli([*cell.args(), *spec.METHODS["ce"].build({}, 0), "--trainer.default_root_dir", root],
                        run=False, save_config=False)
    data = cli.datamodule
    out = {name: data.source.split(name) for name in ("train", "val", "test")}
    labeled = data.labeled_rows
    if labeled is not None:
        train = out["train"]
        fine = None if train.fine_labels is None else train.fine_labels[labeled]
        out["train"] = dataclasses.replace(train, texts=[train.texts[i] for i in labeled],
                                           labels=train.labels[labeled], row_ids=train.row_ids[labeled],
                                           fine_labels=fine)
    return out


# -- the peers --------------------------------------------------------------------------------------------------
def distilled(encoder: str, pca_dims: int):
    """(the static featuriser whose table is ``encoder`` distilled by model2vec, the seconds its distillation took
    now, or None when the cache had it): the static student's table, from the same cache (``CACHE``), built once."""
    import torch

    from lelp_lightning.cache import TeacherCache
    from lelp_lightning.data.static_featurizer import MARKER, StaticTokenFeaturizer

    featurizer = StaticTokenFeaturizer(encoder=encoder, pca_dims=pca_dims)
    featurizer.use_cache(TeacherCache(CACHE))
    if (CACHE / featurizer.table_key / MARKER).is_file():
        return featurizer, None
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # a cache build, as the grid's prepare phase: every core
    start = time.perf_counter()
    try:
        featurizer.folder  # noqa: B018 (reading it distils)
    finally:
        torch.set_num_threads(threads)
    return featurizer, time.perf_counter() - start


def fit_model2vec(run: PeerRun, data: dict) -> tuple[object, float, dict]:
    """(the fitted classifier, its training seconds, what the record notes of its build)."""
    from model2vec.train import StaticModelForClassification

    featurizer, built = distilled(run.encoder, dict(run.options)["pca_dims"])
    classifier = StaticModelForClassification.from_static_model(model=featurizer.static_model)
    start = time.perf_counter()
    classifier.fit(list(data["train"].texts), data["train"].labels.tolist(), X_val=list(data["val"].texts),
                   y_val=data["val"].labels.tolist(), random_seed=run.seed, device="cpu")
    seconds = time.perf_counter() - start
    return classifier.eval(), seconds, {"table": featurizer.table_key, "distill_s": None if built is None
                                        else round(built, 1)}


def fit_setfit(run: PeerRun, data: dict) -> tuple[object, float, dict]:
    """(the fitted SetFit model, its training seconds, what the record notes of its build)."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from lelp_lightning.encoders.sentence import resolve_model_path

    model = SetFitModel.from_pretrained(str(resolve_model_path(run.encoder)))
    train = Dataset.from_dict({"text": list(data["train"].texts), "label": data["train"].labels.tolist()})
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, report_to="none", seed=run.seed, **dict(run.options))
        start = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=train).train()
        seconds = time.perf_counter() - start
    return model, seconds, {"body": str(resolve_model_path(run.encoder))}


FIT = {"model2vec": fit_model2vec, "setfit": fit_setfit}
PACKAGES = {"model2vec": ("model2vec", "skeletoken"), "setfit": ("setfit", "sentence-transformers", "datasets")}


def scores(model, split) -> dict[str, float]:
    """Accuracy and macro-F1 of ``model``'s predictions on ``split`` (scikit-learn's definitions)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    predicted = np.asarray(model.predict(list(split.texts))).astype(np.int64)
    return {"accuracy": float(accuracy_score(split.labels, predicted)),
            "macro_f1": float(f1_score(split.labels, predicted, average="macro"))}


def execute(run: PeerRun, cell: spec.Cell, git: tuple[str, bool], data: dict | None = None) -> dict:
    """Train one peer run on ``cell``'s rows (``data``, else read now), write its record and return it; an existing
    record is returned as it is."""
    import torch

    from lelp_lightning.fileio import atomic_write_json

    if run.path.is_file():
        return json.loads(run.path.read_text())
    start = time.perf_counter()
    data = data if data is not None else splits(cell)
    torch.manual_seed(run.seed)
    model, fit_s, built = FIT[run.peer](run, data)
    val, test = scores(model, data["val"]), scores(model, data["test"])
    record = {
        "identity": run.identity(), "key": run.key, "peer": run.peer, "task": run.task, "regime": run.regime,
        "encoder": run.encoder, "options": dict(run.options), "seed": run.seed, "cell": cell.name,
        "rows": {name: len(split) for name, split in data.items()},
        "metrics": {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                    "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"]},
        "fit_s": round(fit_s, 2), "wall_s": round(time.perf_counter() - start, 2), **built,
        "git_sha": git[0], "git_dirty": git[1],
        "versions": provenance.versions("torch", "numpy", "scikit-learn", "transformers", "tokenizers",
                                        *PACKAGES[run.peer]),
        "machine": grid.machine(), "threads": torch.get_num_threads(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    run.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.path, record)
    return record


# -- what the tables read ---------------------------------------------------------------------------------------
def load_records() -> list[dict]:
    """Every peer record of the current ``PROTOCOL``."""
    return spec.read_records(RECORDS, PROTOCOL)


@dataclass
class PeerStat:
    """One peer in one cell: its seeds' test accuracies (fractions), macro-F1s and training seconds."""

    test: list[float]
    macro_f1: list[float]
    fit_s: list[float]
    cpus: set[str]

    @property
    def mean_fit_s(self) -> float:
        return statistics.fmean(self.fit_s)


def cell_stats(records: list[dict], seeds: int) -> dict[str, dict[str, PeerStat]]:
    """{cell name: {peer: its records' figures over seeds 0 .. seeds-1}} for every cell a record shows in."""
    by_key = {r["key"]: r for r in records}
    out: dict[str, dict[str, PeerStat]] = {}
    for name, cell in spec.CELLS.items():
        found: dict[str, list[dict]] = {}
        for run in runs_for(cell, seeds):
            if run.key in by_key:
                found.setdefault(run.peer, []).append(by_key[run.key])
        for peer, rs in found.items():
            out.setdefault(name, {})[peer] = PeerStat([r["metrics"]["test_accuracy"] for r in rs],
                                                      [r["metrics"]["test_macro_f1"] for r in rs],
                                                      [r["fit_s"] for r in rs], {r["machine"]["cpu"] for r in rs})
    return out


# -- the command ------------------------------------------------------------------------------------------------
def planned(cells: list[spec.Cell], seeds: int, peers: tuple[str, ...]) -> dict[PeerRun, spec.Cell]:
    """Each distinct peer run of ``cells`` → the first of them it belongs to (whose arguments build its rows)."""
    out: dict[PeerRun, spec.Cell] = {}
    for cell in cells:
        for run in runs_for(cell, seeds):
            if run.peer in peers:
                out.setdefault(run, cell)
    return out


def main(argv: list[str] | None = None) -> None:
    text_cells = [name for name in spec.DEFAULT_CELLS if spec.CELLS[name].teacher in spec.TEACHER_ENCODERS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(text_cells), help="comma-separated grid cells (default: every "
                        "text cell the grid runs; cells that share task, regime and encoder share their runs)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--only_seed", type=int, default=None, help="run only this seed of the plan (to spread a "
                        "slow peer's seeds over processes; each run's record is its own, so processes never collide)")
    parser.add_argument("--list", action="store_true", help="print the runs and what is done, run nothing")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cells.split(",") if c not in spec.CELLS]
    unknown += [p for p in args.peers.split(",") if p not in PEERS]
    if unknown:
        parser.error(f"unknown cells or peers {unknown}; cells: {', '.join(text_cells)}; peers: {', '.join(PEERS)}")
    runs = planned([spec.CELLS[c] for c in args.cells.split(",")], args.seeds, tuple(args.peers.split(",")))
    if args.only_seed is not None:
        runs = {run: cell for run, cell in runs.items() if run.seed == args.only_seed}
    if args.list:
        for run, cell in runs.items():
            print(f"{'done' if run.path.is_file() else 'todo'} {run.peer} {run.task}/{run.regime} {run.encoder} "
                  f"seed {run.seed} (rows of {cell.name})")
        return
    import torch

    torch.set_num_threads(1)  # as the grid's workers
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    git = provenance.git_state(*CODE)
    data: dict[str, dict] = {}
    for run, cell in runs.items():
        if run.path.is_file():
            continue
        if cell.name not in data:
            data[cell.name] = splits(cell)
        record = execute(run, cell, git, data[cell.name])
        m = record["metrics"]
        print(f"{run.peer} {run.task}/{run.regime} {run.encoder} seed {run.seed}: test {100 * m['test_accuracy']:.2f}"
              f", val {100 * m['val_accuracy']:.2f} ({record['fit_s']:.1f} s training)", flush=True)
    print("done; `python -m benchmarks.report` writes benchmarks/RESULTS.md from the records", flush=True)


if __name__ == "__main__":
    main()
