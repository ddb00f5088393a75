"""The accuracy grid's specification: what is measured, and what a run and its record are.

Tasks, teachers, students and regimes form the cells; each method is one of ``lelp tune``'s default-space methods
(its strategy and objectives) with its candidate hyper-parameters (from the grids below); the ablations change
LELP's selected configuration. A run's identity (and
so its record's key and path) is fixed here: change it and ``PROTOCOL`` must change too. ``grid.py`` runs this
specification, ``selection.py`` chooses among the candidates, ``tables.py`` reads the records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from lelp_lightning.tune.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "benchmarks" / "results" / "accuracy" / "records"
BASE = REPO / "benchmarks" / "accuracy" / "base.yaml"
PROTOCOL = 1  # bump when a change makes old records incomparable (they are then ignored, not deleted)

LR_FACTORS = (0.5, 1.0, 2.0)
TAUS = (1.0, 2.0, 4.0)
S_GRID = (2, 4, 8)
BETAS = (0.5, 1.0, 2.0)
ENSEMBLE_MEMBERS = (2, 4, 8)  # random-projection members of 2 subclasses each: S = 4, 8, 16
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
    "tweets2full": Task("Tweets, binary (every one of the 22,812 unique tweets)",
                        tuple(cfg("configs/data/tweets_binary.yaml"))),
    "fmnist": Task("Fashion-MNIST binarised (label % 2; 20,000-image training subset)",
                   (*cfg("configs/experiments/fashion_mnist.yaml"), "--data.source.init_args.max_train", "20000"), 5),
}

TEACHERS = {  # label, CLI arguments, the representation besides the final layer's input that strategies may read
    "mpnet": ("all-mpnet-base-v2 + MLP head (bf16 pass)",
              (*cfg("configs/teacher/mpnet_mlp.yaml"), "--data.teacher.init_args.precision", "bf16"), "encoder"),
    # The same teacher, its pass in float32: bf16 is fast only on CPUs with native bf16 (AVX-512 BF16 / AMX; the
    # Intel Xeon the bf16 cells ran on, and an AMD EPYC Zen 4, whose lscpu flags list avx512_bf16); on an AVX2-only
    # CPU (the AMD EPYC rt/mpnet_fp32/bag/sup ran on) it is 6.3× slower than fp32 (3.7 vs 23.6 rows/s, measured).
    # rt/mpnet/static/sup reads the bf16 pass like the other rt/mpnet cells; built on another CPU its cache may
    # round differently (RESULTS.md's teacher-readings table shows where it does).
    "mpnet_fp32": ("all-mpnet-base-v2 + MLP head (fp32 pass)", tuple(cfg("configs/teacher/mpnet_mlp.yaml")),
                   "encoder"),
    "minilm": ("all-MiniLM-L6-v2 + MLP head", tuple(cfg("configs/teacher/minilm_mlp.yaml")), "encoder"),
    # the paper's regime: a teacher fine-tuned end to end (by the framework, once, cached); its other representation is
    # the last layer's hidden states averaged over the tokens
    "minilm_ft": ("all-MiniLM-L6-v2 fine-tuned end to end", tuple(cfg("configs/teacher/minilm_finetuned.yaml")),
                  "hidden"),
    "cnn": ("small CNN trained by the framework", (), "conv"),  # configs/experiments/fashion_mnist.yaml sets it
    # the same CNN trained 5x longer (15 epochs): the 3-epoch one (96.59%) does not beat the pixel MLP (96.71%)
    "cnn15": ("small CNN trained by the framework, 15 epochs", ("--data.teacher.init_args.epochs", "15"), "conv"),
}
# the sentence encoder each text teacher reads (the fine-tuned teacher's base): the static student's table and the
# model2vec peer are distilled from it
TEACHER_ENCODERS = {"mpnet": "all-mpnet-base-v2", "mpnet_fp32": "all-mpnet-base-v2", "minilm": "all-MiniLM-L6-v2",
                    "minilm_ft": "all-MiniLM-L6-v2"}
REPRESENTATION_LABELS = {"encoder": "the encoder's output", "conv": "the conv features", "hidden": "a hidden layer"}


@dataclass(frozen=True)
class Student:
    label: str
    args: tuple[str, ...]
    lr: float
    epochs: int
    batch_size: int
    methods: tuple[str, ...] | None = None  # the grid's methods it runs (None: every one); each with its stage bases
    encoder_from_teacher: bool = False  # its featuriser reads the cell's teacher encoder (TEACHER_ENCODERS)
    # a student whose runs cost minutes selects along fewer axes: KD picks τ at the student alone's chosen learning
    # rate (3 runs, not 9) and LELP picks S at β = 1 as the other strategies do (3 runs, not 9)
    lean_selection: bool = False


# students whose runs cost 10-20 s each here run fewer methods than the 21 of the others (~170 runs per cell):
# the baselines, LELP, the retrained head, k-means with and without its own τ and on the other representation, GMM
# there, and the random split
STATIC_METHODS = ("ce", "kd", "lelp", "subclass_distillation", "kmeans", "kmeans+tau", "kmeans@repr",
                  "kmeans@repr+tau", "gmm@repr", "random_split")
TRANSFORMER_METHODS = ("ce", "kd", "lelp", "subclass_distillation", "kmeans@repr", "gmm@repr")


STUDENTS = {
    "mlp_minilm": Student("MLP 384→128 on MiniLM features", tuple(cfg("configs/student/mlp_minilm.yaml")),
                          1e-3, 12, 64),
    # the bag's records before the sparse path (dense AdamW over the whole table), kept as they were measured
    "bag": Student("hashed uni+bigram bag (2^16 buckets, 64-d), dense AdamW",
                   (*cfg("configs/student/hashed_bag.yaml"), "--model.student.init_args.sparse", "false",
                    "--data.featurizer", json.dumps({"class_path": "HashedNgramFeaturizer",
                                                     "init_args": {"num_buckets": 65536, "max_ngram": 2}})),
                   0.02, 5, 64),
    "bag_sparse": Student("hashed uni+bigram bag (2^16 buckets, 64-d), sparse lazy Adam",
                          (*cfg("configs/student/hashed_bag.yaml"),
                           "--data.featurizer", json.dumps({"class_path": "HashedNgramFeaturizer",
                                                            "init_args": {"num_buckets": 65536, "max_ngram": 2}})),
                          0.02, 5, 64),
    "mlp_pixels": Student("MLP 784→64 on pixels",
                          ("--data.featurizer", json.dumps({"class_path": "PixelFeaturizer",
                                                            "init_args": {"flatten": True}}),
                           "--model.student", json.dumps({"class_path": "mlp",
                                                          "init_args": {"hidden_dims": [64]}})),
                          1e-3, 10, 128),
    # a model2vec table distilled from the cell's teacher encoder (PCA 256) under a 512-unit MLP, lazy Adam
    "static": Student("static token embeddings (model2vec of the teacher's encoder, PCA 256) + MLP 512",
                      tuple(cfg("configs/student/static.yaml")), 1e-3, 8, 32, STATIC_METHODS,
                      encoder_from_teacher=True),
    # ~5 min per run on one thread of the 2-core AMD EPYC (tweets2, 7,000 rows, 3 epochs): 36 runs with the lean
    # selection instead of 48
    "transformer": Student("all-MiniLM-L6-v2's layers 0, 2, 4 (every other), fine-tuned",
                           tuple(cfg("configs/student/transformer.yaml")), 5e-5, 3, 32, TRANSFORMER_METHODS,
                           lean_selection=True),
    # the same student keeping layers 0, 1, 2 instead of 0, 2, 4: which layers to keep is an open choice, measured on
    # the student alone and KD
    "transformer_first": Student("all-MiniLM-L6-v2's layers 0, 1, 2 (the first 3), fine-tuned",
                                 (*cfg("configs/student/transformer.yaml"),
                                  "--model.student.init_args.layers", "first"),
                                 5e-5, 3, 32, ("ce", "kd"), lean_selection=True),
}

REGIMES = {
    "sup": ("supervised: every training row labeled", ()),
    "few": (f"{FEW_LABELS:,} labels, the rest a transfer set", ("--data.num_labeled", str(FEW_LABELS))),
}

# (task, teacher, student, regimes): sized so that the grid, caches excluded, fits well inside 3 h on 2 cores
CELL_SPECS = [
    ("rt", "mpnet", "mlp_minilm", ("sup", "few")),
    ("rt", "mpnet_fp32", "bag_sparse", ("sup",)),
    ("tweets2", "mpnet", "mlp_minilm", ("sup",)),
    ("tweets2", "minilm", "bag_sparse", ("sup",)),
    ("tweets2", "minilm_ft", "bag_sparse", ("sup",)),
    ("tweets3", "minilm", "bag_sparse", ("sup",)),
    ("20ng", "minilm", "bag_sparse", ("sup",)),
    ("20ng", "minilm_ft", "bag_sparse", ("sup",)),
    ("tweets2", "minilm", "static", ("sup",)),
    ("tweets2full", "minilm", "static", ("sup",)),
    ("tweets3", "minilm", "static", ("sup",)),
    ("rt", "mpnet", "static", ("sup",)),
    ("20ng", "minilm", "static", ("sup",)),
    ("20ng", "minilm_ft", "static", ("sup",)),
    ("tweets2", "minilm_ft", "transformer", ("sup",)),
    ("tweets2", "minilm_ft", "transformer_first", ("sup",)),
    ("rt", "mpnet", "transformer", ("few",)),
    ("fmnist", "cnn", "mlp_pixels", ("sup", "few")),
    ("fmnist", "cnn15", "mlp_pixels", ("sup",)),
]
# measured before the sparse bag existed, with the methods of that time: reported beside their sparse reruns, not run
# by default (``grid.py --cells`` still can)
LEGACY_SPECS = [("rt", "mpnet_fp32", "bag", ("sup",)), ("tweets2", "minilm", "bag", ("sup",)),
                ("tweets3", "minilm", "bag", ("sup",)), ("20ng", "minilm", "bag", ("sup",))]
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
        encoder = ["--data.featurizer.init_args.encoder", TEACHER_ENCODERS[self.teacher]] \
            if s.encoder_from_teacher else []
        return [*cfg(str(BASE.relative_to(REPO))), *TASKS[self.task].args, *TEACHERS[self.teacher][1], *s.args,
                *encoder, *REGIMES[self.regime][1], "--trainer.max_epochs", str(s.epochs), "--data.batch_size",
                str(s.batch_size)]


CELLS = {c.name: c for t, te, st, regimes in CELL_SPECS + LEGACY_SPECS for c in (Cell(t, te, st, r) for r in regimes)}
LEGACY = {Cell(t, te, st, r).name for t, te, st, regimes in LEGACY_SPECS for r in regimes}
DEFAULT_CELLS = [name for name in CELLS if name not in LEGACY]


# -- methods ----------------------------------------------------------------------------------------------------
# What a method is (its strategy and its objectives) has one definition: ``lelp tune``'s default search space, whose
# methods the presets in configs/method/ are too (tests/test_accuracy_benchmark.py checks both). A grid method names
# the space's method it runs and the values it gives that method's parameters (``Method.class_args``); what the grid
# adds is its selection: the candidates, the stage and the regimes.
SPACE = SearchSpace.load()


@dataclass(frozen=True)
class Method:
    label: str
    stage: int  # 1: selected first (its choices feed stage 2)
    candidates: object  # (cell, selected: dict[method, hp]) -> list[hp]
    runs: str  # the default space's method it runs (its strategy and objectives)
    values: object  # hp -> {that method's parameter: value}, num_subclasses included
    regimes: tuple[str, ...] = ("sup", "few")
    representation: bool = False  # reads the teacher's other representation (TEACHERS[...][2]) instead of final

    @property
    def needs_fine(self) -> bool:
        """Whether its strategy reads the true hidden subclasses (the oracle): only cells whose task has them."""
        return "fine_labels" in SPACE.methods[self.runs].strategy_class.requires

    def build(self, hp: dict, seed: int) -> list[str]:
        """The ``--data.strategy`` and ``--model.objectives`` arguments of a run with ``hp`` and ``seed``."""
        method = SPACE.methods[self.runs]
        strategy_args, terms = method.class_args(self.values(hp), {"num_subclasses": 1, "seed": seed,
                                                                   **method.strategy[1]})
        return ["--data.strategy", json.dumps({"class_path": method.strategy[0], "init_args": strategy_args}),
                "--model.objectives", json.dumps([{"class_path": n, "init_args": a} for n, a in terms])]


def kd_values(hp: dict) -> dict:
    """KD's temperature τ and α (0 unless chosen)."""
    return {"temperature": hp["tau"], "alpha": hp.get("alpha", 0.0)}


def subclass_values(hp: dict) -> dict:
    """A pseudo-subclass method's S, and subclass_ce's τ, β and α (τ = 1, α = 0 unless chosen)."""
    return {"num_subclasses": hp["S"], "tau": hp.get("tau", 1.0), "beta": hp["beta"], "alpha": hp.get("alpha", 0.0)}


def lelp_values(hp: dict) -> dict:
    """LELP's: a pseudo-subclass method's, and the options its ablations change."""
    return {**subclass_values(hp), **{k: hp[k] for k in ("null_space", "rotation") if k in hp}}


def from_kd(sel: dict, **hp) -> dict:
    """KD's chosen learning rate and temperature τ (τ recorded only when it is not 1) and ``hp``."""
    tau = sel["kd"]["tau"]
    return {"lr": sel["kd"]["lr"], **({"tau": tau} if tau != 1.0 else {}), **hp}


def kd_candidates(cell: Cell, sel: dict) -> list[dict]:
    """KD's (learning rate, τ) candidates: every pair, or (lean selection) each τ at the student alone's rate."""
    if STUDENTS[cell.student].lean_selection:
        return [{"lr": sel["ce"]["lr"], "tau": t} for t in TAUS]  # a KeyError until the student alone is chosen
    return [{"lr": STUDENTS[cell.student].lr * f, "tau": t} for t in TAUS for f in LR_FACTORS]


def _strategy_method(label: str, name: str) -> Method:
    return Method(label, 2, lambda cell, sel: [from_kd(sel, S=s, beta=1.0) for s in S_GRID], name, subclass_values)


def own_tau(base: str, label: str, betas: tuple[float, ...] = (), representation: bool = False) -> Method:
    """``base``'s selected configuration with its own τ (and, for a soft method, β) chosen on validation: stage 3,
    one coordinate after the others, so its cost is |TAUS| × |betas| runs rather than a product with S."""
    def candidates(cell, sel):
        chosen = sel[base]
        return [{**chosen, "tau": t, **({"beta": b} if betas else {})} for t in TAUS for b in (betas or (None,))]
    return Method(label, 3, candidates, METHODS[base].runs, METHODS[base].values, representation=representation)


def on_representation(base: str, label: str) -> Method:
    """``base`` (selected as it is) on the teacher's other representation: the encoder's output, conv features."""
    spec = METHODS[base]
    return Method(label, 2, spec.candidates, spec.runs, spec.values, representation=True)


METHODS: dict[str, Method] = {
    "ce": Method("student alone (CE on the labels)", 1,
                 lambda cell, sel: [{"lr": STUDENTS[cell.student].lr * f} for f in LR_FACTORS], "ce", lambda hp: {}),
    "kd": Method("vanilla KD", 1, lambda cell, sel: kd_candidates(cell, sel), "kd", kd_values),
    "kd_alpha": Method("vanilla KD, α = 0.5", 2, lambda cell, sel: [{**sel["kd"], "alpha": 0.5}], "kd", kd_values),
    "fitnets": Method("embedding matching (FitNets, KD + 0.1·hint)", 2, lambda cell, sel: [sel["kd"]], "fitnets",
                      lambda hp: {**kd_values(hp), "embedding_matching.hint_epochs": 0,
                                  "embedding_matching.weight": 0.1}),
    "subclass_distillation": _strategy_method("Subclass Distillation (retrained C·S head)", "subclass_distillation"),
    "lelp": Method("LELP", 2, lambda cell, sel: [from_kd(sel, S=s, beta=b) for s in S_GRID
                                                 for b in ((1.0,) if STUDENTS[cell.student].lean_selection else BETAS)],
                   "lelp", lelp_values),
    "lelp_alpha": Method("LELP, α = 0.5", 2, lambda cell, sel: [{**sel["lelp"], "alpha": 0.5}], "lelp",
                         lelp_values),
    "pca": _strategy_method("PCA only", "pca"),
    "random_projection": _strategy_method("random projections", "random_projection"),
    "kmeans": _strategy_method("k-means (hard)", "kmeans"),
    "gmm": _strategy_method("GMM (diagonal)", "gmm"),
    "random_split": _strategy_method("random split (more logits, no structure)", "random_split"),
    "oracle": Method("oracle (true hidden subclasses)", 2,
                     lambda cell, sel: [from_kd(sel, S=TASKS[cell.task].fine_per_class, beta=1.0)], "oracle",
                     subclass_values),
}

LEGACY_METHODS = tuple(METHODS)  # the methods of the legacy cells' time

METHODS["rp_ensemble"] = Method("ensemble of random projections (M members × 2)", 2,
                                lambda cell, sel: [from_kd(sel, M=m, beta=1.0) for m in ENSEMBLE_MEMBERS],
                                "random_projection_ensemble",
                                lambda hp: {**subclass_values({**hp, "S": 2 * hp["M"]}), "num_projections": hp["M"]})

# the representation axis and each method's own temperature (β for the soft GMM): LELP, k-means, GMM on the final
# layer's input with KD's τ (above), with their own τ, and on the teacher's other representation with KD's and their own
for _base, _label, _betas in (("lelp", "LELP", ()), ("kmeans", "k-means (hard)", ()), ("gmm", "GMM (diagonal)", BETAS),
                              ("rp_ensemble", "ensemble of random projections", ())):
    METHODS[f"{_base}+tau"] = own_tau(_base, f"{_label}, own τ", _betas)
    METHODS[f"{_base}@repr"] = on_representation(_base, f"{_label} on the other representation")
    METHODS[f"{_base}@repr+tau"] = own_tau(f"{_base}@repr", f"{_label} on the other representation, own τ", _betas,
                                           representation=True)
REPRESENTATION_METHODS = ("lelp", "kmeans", "gmm", "rp_ensemble")

# LELP's selected configuration with one change each; tested on every seed
ABLATIONS = {
    "S": [{"S": s} for s in (1, 2, 4, 8, 16)],
    "beta": [{"beta": b} for b in (0.25, 0.5, 1.0, 2.0, 4.0)],
    "null_space": [{"null_space": False}],
    "rotation": [{"rotation": "none"}],
}


# the cells whose grid runs every method of the default space: the tune benchmark's (a student with a reduced method
# list has no full grid to compare a study with)
TUNE_CELLS = [name for name in DEFAULT_CELLS if STUDENTS[CELLS[name].student].methods is None]


# cells that run fewer methods than their student's list, for cost: the transformer student with 1,000 labels on
# Rotten Tomatoes (where SetFit, a fine-tuned MiniLM on the labels alone, is the peer) distils on 9,014 rows a run
CELL_METHODS = {"rt/mpnet/transformer/few": ("ce", "kd", "lelp")}


def methods_for(cell: Cell) -> list[str]:
    """The methods ``cell`` runs, in grid order: those its task, regime, legacy status, student and CELL_METHODS
    allow."""
    allowed = CELL_METHODS.get(cell.name, STUDENTS[cell.student].methods)
    return [m for m, spec in METHODS.items()
            if (not spec.needs_fine or TASKS[cell.task].fine_per_class) and cell.regime in spec.regimes
            and (cell.name not in LEGACY or m in LEGACY_METHODS) and (allowed is None or m in allowed)]


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
        cell = CELLS[self.cell]
        representation = ["--data.representation", TEACHERS[cell.teacher][2]] if METHODS[self.method].representation \
            else []
        return [*cell.args(), *METHODS[self.method].build(hp, self.seed), *representation, "--model.lr", str(hp["lr"]),
                "--seed_everything", str(self.seed),
                # its config.yaml (git-ignored)
                "--trainer.default_root_dir", str(REPO / "runs" / "accuracy" / self.key)]


def make_run(cell: Cell, method: str, hp: dict, seed: int, test: bool, phase: str) -> Run:
    return Run(cell.name, method, tuple(sorted(hp.items())), seed, test, phase)


def read_records(folder: Path, protocol: int) -> list[dict]:
    """Every record under ``folder``'s subfolders whose identity has ``protocol`` (older ones stay on disk, ignored)."""
    out = []
    for path in sorted(folder.glob("*/*.json")):
        record = json.loads(path.read_text())
        if record.get("identity", {}).get("protocol") == protocol:
            out.append(record)
    return out


def load_records() -> list[dict]:
    """Every grid record of the current ``PROTOCOL``."""
    return read_records(RECORDS, PROTOCOL)
