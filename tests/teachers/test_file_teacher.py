"""The file teacher and `lelp cache --export`: a cache exported and read back is the same cache bit for bit and
distils the same student; what the file lacks is filled in as documented (a least-squares probe equal to numpy's,
smoothed one-hot logits by hand, log-probabilities); every bad file is one sentence and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, REPO, TINY_TEACHER, run_lelp, run_main, tiny_run_args, tiny_teacher, tiny_tweets

from lelp_lightning.cache import TeacherCache
from lelp_lightning.core import SPLITS
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.encoders import SentenceEncoder, resolve_model_path
from lelp_lightning.strategies import LinearProjectionStrategy
from lelp_lightning.teachers import FileTeacher

FORMATS = ("npz", "parquet", "jsonl", "csv")
CLASSES = ["negative", "positive"]
TINY_BERT = {"vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}


def datamodule(teacher, cache_dir, **kwargs) -> DistillDataModule:
    return DistillDataModule(tiny_tweets(), teacher, LinearProjectionStrategy(num_subclasses=2),
                             cache_dir=str(cache_dir), progress=False, **kwargs)


def file_args(cache_dir, run_dir, path, *extra) -> list[str]:
    """`lelp` run options of the tiny tweets with the file teacher reading ``path``."""
    return tiny_run_args(cache_dir, run_dir, "--config", str(CONFIGS / "teacher" / "file.yaml"),
                         "--data.teacher.path", str(path), *extra, wandb=False)


@pytest.fixture(scope="module")
def reference(tweets_cache_dir):
    """The tiny MiniLM teacher's cache entries (the session cache), split → entry."""
    return datamodule(tiny_teacher(), tweets_cache_dir).plan.open()


@pytest.fixture(scope="module")
def exported(tweets_cache_dir, tmp_path_factory):
    """The session cache written by `lelp cache --export` in every format, format → file."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for fmt in FORMATS:
        files[fmt] = folder / f"teacher.{fmt}"
        ran = run_main("cache", *tiny_run_args(tweets_cache_dir, folder, wandb=False), "--export", str(files[fmt]))
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "teacher cache hit" in ran.stderr and f"written to {files[fmt]}" in ran.stdout
    return files


@pytest.fixture(scope="module")
def table(exported):
    """The exported NPZ's arrays: the base of the hand-made files below."""
    with np.load(exported["npz"]) as arrays:
        return {name: arrays[name] for name in arrays.files}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT (16-d) with MiniLM's tokenizer: a fast encoder for a file without embedding.

    Its last LayerNorm gets a random bias and its output is L2-normalised (a Normalize module, as MiniLM's): with
    the initial bias of 0 every mean-pooled feature vector sums to 0, an exact collinearity (condition number 1e8)
    that trained weights do not have and that makes any least-squares W arbitrary."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY_BERT))
    with torch.no_grad():
        model.encoder.layer[-1].output.LayerNorm.bias.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2")).save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    return str(folder)


def rows_of(split: str, table: dict) -> np.ndarray:
    return np.flatnonzero(table["split"] == split)


def source_logits(teacher: FileTeacher, tmp_path) -> dict[str, np.ndarray]:
    """The file teacher fitted on the tiny tweets: every split's logits, in the split's row order."""
    source = tiny_tweets()
    teacher.fit(source, TeacherCache(tmp_path))
    return {s: teacher.encode_rows(source.split(s), np.arange(len(source.split(s))))[1] for s in SPLITS}


# -- the round trip ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_cache_read_back_by_the_file_teacher_is_the_same_cache_bit_for_bit(fmt, exported, reference,
                                                                                       tmp_path):
    entries = datamodule(FileTeacher(str(exported[fmt])), tmp_path).plan
    entries.build(progress=False)
    opened = entries.open()
    for split in SPLITS:
        for name in ("embedding", "logits", "label", "row_id", "W", "b"):
            np.testing.assert_array_equal(getattr(opened[split], name), getattr(reference[split], name))
        assert "classifier" not in opened[split].manifest["meta"]  # the file's own final layer, checked as exact


def test_the_export_holds_every_split_its_labels_and_the_teacher_prediction(table, reference):
    for split in SPLITS:
        rows, entry = rows_of(split, table), reference[split]
        np.testing.assert_array_equal(table["row_id"][rows], entry.row_id)
        assert table["label"][rows].tolist() == [CLASSES[c] for c in np.asarray(entry.logits).argmax(1)]
        assert table["true_label"][rows].tolist() == [CLASSES[c] for c in entry.label]
        assert table["text"][rows].tolist() == tiny_tweets().split(split).texts
    assert table["classes"].tolist() == CLASSES


def test_the_student_distilled_from_the_exported_file_is_the_student_of_the_teacher(exported, tweets_cache_dir,
                                                                                     tmp_path):
    runs = {}
    for name, args in (("teacher", tiny_run_args(tweets_cache_dir, tmp_path / "teacher", wandb=False)),
                       ("file", file_args(tmp_path / "cache", tmp_path / "file", exported["parquet"]))):
        ran = run_main("fit", *args, "--data.strategy.num_subclasses", "2")
        assert ran.returncode == 0, ran.stderr[-3000:]
        version = tmp_path / name / "tiny" / "version_0"
        summary = json.loads((version / "summary.json").read_text())
        weights = torch.load(next((version / "checkpoints").glob("epoch*.ckpt")), map_location="cpu",
                             weights_only=True)["state_dict"]
        runs[name] = summary, weights
    (teacher, teacher_weights), (file, file_weights) = runs["teacher"], runs["file"]
    assert file["config"]["data"]["teacher"]["class_path"].endswith(".FileTeacher")
    for who in ("student", "teacher"):
        assert file[who] == teacher[who]
    assert teacher_weights.keys() == file_weights.keys()
    for name, tensor in teacher_weights.items():
        assert torch.equal(file_weights[name], tensor), name


def test_an_export_never_overwrites_a_file(exported, tweets_cache_dir, tmp_path):
    before = exported["csv"].read_bytes()
    ran = run_main("cache", *tiny_run_args(tweets_cache_dir, tmp_path, wandb=False), "--export", str(exported["csv"]))
    assert ran.returncode == 2 and f"lelp: error: lelp cache --export: {exported['csv']} exists" in ran.stderr
    assert exported["csv"].read_bytes() == before
    ran = run_main("cache", *tiny_run_args(tweets_cache_dir, tmp_path, wandb=False), "--export", str(tmp_path / "x.h5"))
    assert ran.returncode == 2 and "expected one of .parquet, .jsonl, .csv, .npz" in ran.stderr


# -- bad files: one sentence, exit status 2 ----------------------------------------------------------------------

def write_npz(path, table, **changes):
    arrays = {k: v for k, v in table.items() if k not in ("W", "b")}  # no final layer: the probe stands in
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def take(table: dict, index: np.ndarray) -> dict:
    """The rows ``index`` of every per-row array of ``table`` (the classes and final layer as they are)."""
    return {k: v if k in ("W", "b", "classes") else v[index] for k, v in table.items()}


def bad_files(table, folder):
    n = len(table["row_id"])
    val = rows_of("val", table)
    keep = np.setdiff1d(np.arange(n), val[:3])
    nan, inf = table["logits"].copy(), table["logits"].copy()
    nan[5, 1], inf[7, 0] = np.nan, np.inf
    probs = np.full((n, 2), 0.5)
    probs[9] = [0.5, 0.6]
    labels = np.array(CLASSES)[table["logits"].argmax(1)]
    labels[4] = "neutral"
    frame = pd.DataFrame({"row_id": table["row_id"], "logit_negative": table["logits"][:, 0],
                          "logit_neutral": table["logits"][:, 1]})
    frame.to_csv(folder / "wrong_class.csv", index=False)
    pd.DataFrame({"row_id": table["row_id"], "score": table["logits"][:, 0]}).to_json(
        folder / "no_outputs.jsonl", orient="records", lines=True)
    (folder / "garbage.parquet").write_bytes(b"this is not a parquet file")
    first_val = table["row_id"][val[:3]].tolist()
    return {
        "missing rows": (write_npz(folder / "missing.npz", take(table, keep)),
                         f"lacks 3 of the 30 rows of the val split (first row ids {', '.join(map(str, first_val))})"),
        "duplicate keys": (write_npz(folder / "duplicate.npz", take(table, np.r_[np.arange(n), 0])),
                           f"has 1 duplicate row_id value(s) (first {table['row_id'][0]}); expected one row per"),
        "a class the source lacks": (folder / "wrong_class.csv",
                                     "has class 'neutral' that the source does not have; expected its classes "
                                     "negative, positive"),
        "no outputs column": (folder / "no_outputs.jsonl", "has no one of logits, log_probs, probs, label outputs"),
        "NaN logits": (write_npz(folder / "nan.npz", table, logits=nan), "logits that are NaN, infinite"),
        "infinite logits": (write_npz(folder / "inf.npz", table, logits=inf), "logits that are NaN, infinite"),
        "a label the source lacks": (write_npz(folder / "label.npz", table, logits=None, label=labels),
                                     "has the label 'neutral' that the source does not have"),
        "probabilities not summing to 1": (write_npz(folder / "probs.npz", table, logits=None, probs=probs),
                                           "whose probabilities do not sum to 1 in 1 row(s)"),
        "a file that does not exist": (folder / "absent.parquet", "does not exist"),
        "a file that cannot be parsed": (folder / "garbage.parquet", "cannot be parsed as parquet"),
    }


@pytest.fixture(scope="module")
def bad(table, tmp_path_factory):
    return bad_files(table, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", ["missing rows", "duplicate keys", "a class the source lacks", "no outputs column",
                                  "NaN logits", "infinite logits", "a label the source lacks",
                                  "probabilities not summing to 1", "a file that does not exist",
                                  "a file that cannot be parsed"])
def test_a_bad_file_is_one_sentence_and_exit_status_2(case, bad, tmp_path):
    path, expected = bad[case]
    ran = run_main("cache", *file_args(tmp_path / "cache", tmp_path, path))
    assert ran.returncode == 2, ran.stderr[-3000:]
    errors = [line for line in ran.stderr.splitlines() if line.startswith("lelp: error: ")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in ran.stderr, ran.stderr[-2000:]
    assert errors[0].endswith(".") and not list((tmp_path / "cache").glob("*/manifest.json"))  # nothing cached


# -- what fills in what the file lacks -----------------------------------------------------------------------------

def test_hard_labels_give_the_smoothed_one_hot_logits_by_hand(table, tmp_path):
    labels = np.array(CLASSES)[table["logits"].argmax(1)]
    npz = write_npz(tmp_path / "labels.npz", table, logits=None, label=labels)
    csv = tmp_path / "indices.csv"  # integer indices and no embedding columns: the same logits
    pd.DataFrame({"row_id": table["row_id"], "label": table["logits"].argmax(1)}).to_csv(csv, index=False)
    for path in (npz, csv):
        teacher = FileTeacher(str(path), label_smoothing=0.1, embedding="auto" if path == npz else "encoder",
                              encoder=TINY_TEACHER["encoder"], max_length=TINY_TEACHER["max_length"])
        teacher.encoder.features = lambda source, split, cache: np.zeros((len(source.split(split)), 3), np.float32)
        logits = source_logits(teacher, tmp_path)
        for split in SPLITS:
            y = table["logits"][rows_of(split, table)].argmax(1)
            hand = np.where(np.eye(2)[y] == 1, np.log(0.9 + 0.1 / 2), np.log(0.1 / 2)).astype(np.float32)
            np.testing.assert_array_equal(logits[split], hand)


def test_probabilities_and_log_probabilities_become_logits(table, tmp_path):
    z = table["logits"].astype(np.float64)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    probs = np.exp(log_probs)
    probs[0] = [1.0, 0.0]  # a probability of 0: log of the smallest float32, not -inf
    log_probs[0] = [0.0, -np.inf]
    as_columns = pd.DataFrame({"row_id": table["row_id"], "embedding": list(table["embedding"]),
                               "prob_positive": probs[:, 1], "prob_negative": probs[:, 0]})  # any column order
    as_columns.to_json(tmp_path / "probs.jsonl", orient="records", lines=True, double_precision=15)
    write_npz(tmp_path / "log_probs.npz", table, logits=None, log_probs=log_probs)
    tiny = np.finfo(np.float32).tiny
    expected = {"probs.jsonl": np.log(np.clip(probs, tiny, None)), "log_probs.npz": np.maximum(log_probs, np.log(tiny))}
    for name, want in expected.items():
        logits = source_logits(FileTeacher(str(tmp_path / name)), tmp_path)
        for split in SPLITS:
            np.testing.assert_allclose(logits[split], want[rows_of(split, table)], rtol=1e-6, atol=1e-6)
        softmax = np.exp(logits["train"]) / np.exp(logits["train"]).sum(1, keepdims=True)
        np.testing.assert_allclose(softmax[1:], probs[rows_of("train", table)][1:], atol=1e-6)


def test_without_an_embedding_the_final_layer_is_numpy_lstsq_on_the_encoder_output(table, tiny_bert, tmp_path):
    write_npz(tmp_path / "logits.npz", table, embedding=None)
    teacher = FileTeacher(str(tmp_path / "logits.npz"), encoder=tiny_bert, max_length=16, batch_size=16)
    plan = datamodule(teacher, tmp_path / "cache").plan
    plan.build(progress=False)
    entries = plan.open()
    assert not teacher.exact_classifier and entries["train"].manifest["meta"]["classifier"] == "least_squares_probe"
    texts = tiny_tweets().split("train").texts
    features = SentenceEncoder(tiny_bert, max_length=16).embed_all(texts)  # the encoder run here, not read back
    np.testing.assert_allclose(entries["train"].embedding, features, atol=1e-5)
    design = np.hstack([features.astype(np.float64), np.ones((len(texts), 1))])
    theta = np.linalg.lstsq(design, table["logits"][rows_of("train", table)].astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(entries["train"].W, theta[:-1].T, atol=1e-4)
    np.testing.assert_allclose(entries["train"].b, theta[-1], atol=1e-4)
    for split in SPLITS:  # the cached logits stay the file's, not the probe's read-out
        np.testing.assert_array_equal(entries[split].logits, table["logits"][rows_of(split, table)])


def test_with_an_embedding_and_no_final_layer_the_probe_reads_the_file_embedding(table, tiny_bert, tmp_path):
    write_npz(tmp_path / "embedding.npz", table)
    dm = datamodule(FileTeacher(str(tmp_path / "embedding.npz"), encoder=tiny_bert, max_length=16), tmp_path,
                    representation="encoder")
    dm.prepare_data()
    train = dm.split_cache("train")
    np.testing.assert_array_equal(train.embedding, table["embedding"][rows_of("train", table)])
    # the teacher's layer is linear in its embedding: the probe reproduces its logits
    np.testing.assert_allclose(np.asarray(train.embedding) @ train.W.T + train.b, train.logits, atol=1e-4)
    assert dm.strategy_inputs.embeddings["train"].shape == (210, TINY_BERT["hidden_size"])  # the representation


def test_rows_keyed_by_their_text_in_any_order(table, reference, tmp_path):
    order = np.random.default_rng(0).permutation(len(table["row_id"]))
    frame = pd.DataFrame({"text": table["text"][order], "logits": [json.dumps(v.tolist()) for v in
                                                                   table["logits"][order]]})
    frame.to_csv(tmp_path / "by_text.csv", index=False)
    teacher = FileTeacher(str(tmp_path / "by_text.csv"), key="text", embedding="encoder")
    teacher.encoder.features = lambda source, split, cache: np.zeros((len(source.split(split)), 3), np.float32)
    logits = source_logits(teacher, tmp_path)
    for split in SPLITS:
        np.testing.assert_array_equal(logits[split], reference[split].logits)


def test_a_changed_file_or_sidecar_changes_the_fingerprint(exported, tmp_path):
    copy = tmp_path / "same.npz"
    copy.write_bytes(exported["npz"].read_bytes())
    original = FileTeacher(str(exported["npz"])).fingerprint()
    assert FileTeacher(str(copy)).fingerprint() == original  # the bytes, not the path
    with np.load(copy) as arrays:
        changed = {k: arrays[k] for k in arrays.files}
    changed["logits"][3, 0] += 1e-3
    np.savez(copy, **changed)
    assert FileTeacher(str(copy)).fingerprint() != original
    parquet = tmp_path / "teacher.parquet"
    parquet.write_bytes(exported["parquet"].read_bytes())
    sidecar = tmp_path / "teacher.parquet.classifier.npz"
    sidecar.write_bytes((exported["parquet"].parent / "teacher.parquet.classifier.npz").read_bytes())
    before = FileTeacher(str(parquet)).fingerprint()
    with np.load(sidecar) as arrays:
        np.savez(sidecar, W=arrays["W"] * 2, b=arrays["b"], classes=arrays["classes"])
    assert FileTeacher(str(parquet)).fingerprint() != before
    assert FileTeacher(str(parquet), label_smoothing=0.2).fingerprint() != FileTeacher(str(parquet)).fingerprint()


# -- several processes, and the example script ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_two_process_pass_equals_one_process(table, tiny_bert, tmp_path):
    """A file of probabilities and no embedding: the encoder's features pass and the outputs pass, on 2 gloo
    processes, give the cache one process gives, bit for bit."""
    z = table["logits"].astype(np.float64)
    write_npz(tmp_path / "probs.npz", table, logits=None, embedding=None,
              probs=np.exp(z) / np.exp(z).sum(1, keepdims=True))

    def args(cache_dir):
        return file_args(cache_dir, tmp_path, tmp_path / "probs.npz", "--trainer.accelerator", "cpu",
                         "--data.teacher.encoder", tiny_bert, "--data.teacher.max_length", "16",
                         "--data.teacher.batch_size", "16")

    proc = run_lelp("cache", *args(tmp_path / "two"), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "teacher pass [features]: rank 1" in proc.stderr and "teacher pass [outputs]: rank 1" in proc.stderr
    ran = run_main("cache", *args(tmp_path / "one"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    keys = sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir())
    assert keys == sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_dir()) and len(keys) == 6
    for key in keys:
        a, b = TeacherCache(tmp_path / "one").open(key), TeacherCache(tmp_path / "two").open(key)
        for name in ("embedding", "logits", "label", "row_id", "W", "b"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name))


@pytest.mark.slow
def test_the_example_writes_a_file_the_file_teacher_reads(tweets_cache_dir, reference, tmp_path):
    """examples/teacher_outputs_to_file.py as shipped (its ask_teacher asks the run's own teacher): its
    probabilities are the cached teacher's, and read back they are its logits up to a shift per row."""
    output = tmp_path / "teacher.csv"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "teacher_outputs_to_file.py"), "--output",
                           str(output), *tiny_run_args(tweets_cache_dir, tmp_path, wandb=False)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"300 rows of teacher outputs written to {output}" in proc.stdout
    teacher = FileTeacher(str(output), encoder=TINY_TEACHER["encoder"], max_length=TINY_TEACHER["max_length"])
    logits = source_logits(teacher, tweets_cache_dir)  # the encoder's features are cached there: read, not built
    for split in SPLITS:
        z = np.asarray(reference[split].logits, np.float64)
        log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
        np.testing.assert_allclose(logits[split], log_softmax, atol=1e-4)
    assert teacher.classifier()[0].shape == (2, 384)  # the probe on MiniLM's output
