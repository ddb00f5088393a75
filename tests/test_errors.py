"""Bad input ends as one sentence ``lelp: error: ...`` and exit status 2: never a traceback, never a silently
wrong result. Messy text that can be read is read, the documented way."""

import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import CONFIGS, run_main, tiny_run_args, tiny_teacher, tiny_tweets

from lelp_lightning.cache import PassTarget, TeacherCache, build_entry
from lelp_lightning.cache.plan import check_classifier
from lelp_lightning.cache.teacher_cache import _checksum, _classifier_checksum
from lelp_lightning.cli import build_cli, console_main, main
from lelp_lightning.data.datamodule import DistillDataModule
from lelp_lightning.data.featurizers import HashedNgramFeaturizer
from lelp_lightning.errors import LelpError
from lelp_lightning.module import DistillModule
from lelp_lightning.objectives import objectives
from lelp_lightning.sources import TextFile
from lelp_lightning.strategies import LinearProjectionStrategy, strategies
from lelp_lightning.students import HashedBagStudent, students
from lelp_lightning.teachers import teachers


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """In-process runs without a logger write their config.yaml into the working folder: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


def one_error_line(capsys) -> str:
    """The single ``lelp: error:`` line on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("lelp: error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


# -- configuration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "option", "given", "registry", "command"), [
    (["--data.strategy", "kmeens"], "data.strategy", "kmeens", strategies, "strategies"),
    (["--model.student", "resnet"], "model.student", "resnet", students, "students"),
    (["--model.objectives+=distill"], "model.objectives", "distill", objectives, "objectives"),
    (["--data.teacher", "gpt"], "data.teacher", "gpt", teachers, "teachers"),
])
def test_an_unknown_name_lists_the_valid_ones(args, option, given, registry, command, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), *args, "--print_config"])
    assert done.value.code == 2
    assert one_error_line(capsys) == (
        f"lelp: error: {option}: {given!r} is not a known {registry.kind}; valid {registry.kind} names: "
        f"{', '.join(registry.names())} (or a full class path; `lelp {command}` describes them).")


def test_an_unknown_name_in_a_config_file_too(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  objectives:\n    - class_path: subclass_cee\n      init_args: {tau: 2.0}\n")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(path), "--print_config"])
    assert done.value.code == 2
    assert "'subclass_cee' is not a known objective; valid objective names: " in one_error_line(capsys)


def test_students_have_short_names_like_strategies_and_objectives(capsys):
    assert main(["students"]) == 0
    out = capsys.readouterr().out
    assert "hashed_bag" in out and "HashedBagStudent" in out and "mlp" in out
    assert set(students.names()) >= {"hashed_bag", "mlp"}


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--data.strategy.num_subclasses", "0", "num_subclasses (S) must be an integer >= 1, got 0."),
    ("--model.objectives.tau", "0", "SubclassCrossEntropy.tau must be > 0, got 0.0."),
    ("--model.objectives.beta", "-1", "SubclassCrossEntropy.beta must be > 0, got -1.0."),
])
def test_a_bad_value_is_one_sentence(option, value, message, tweets_cache_dir, tmp_path, capsys):
    """Raised inside constructors while LightningCLI instantiates (jsonargparse wraps some of them)."""
    assert main(["fit", *tiny_run_args(tweets_cache_dir, tmp_path, option, value, wandb=False)]) == 2
    assert one_error_line(capsys) == f"lelp: error: {message}"


def test_a_wrapped_error_reaches_the_shell_as_one_line(tweets_cache_dir, tmp_path, monkeypatch, capsys):
    """Through the console script's entry point (``console_main``, what the ``lelp`` executable calls), in this
    process: the exit status the shell sees is 2 and the last line on stderr the one sentence. (A real
    ``lelp`` subprocess exiting with 2 is tests/test_cli.py::test_bad_input_exits_nonzero_with_one_sentence.)"""
    monkeypatch.setattr(sys, "argv", ["lelp", "fit", *tiny_run_args(tweets_cache_dir, tmp_path,
                                                                     "--model.objectives.tau", "-2", wandb=False)])
    with pytest.raises(SystemExit) as done:
        console_main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "lelp: error: SubclassCrossEntropy.tau must be > 0, got -2.0."


def test_the_head_size_always_comes_from_the_data(tweets_cache_dir, tmp_path):
    """A pinned ``num_outputs`` is replaced by the data's C·S (a linked argument), so the head cannot mismatch."""
    cli = build_cli(tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy.num_subclasses", "3",
                                  "--model.student.init_args.num_outputs", "7", wandb=False), run=False)
    assert cli.model.student.num_outputs == 6 and cli.model.student.head.weight.shape[0] == 6


def test_a_head_that_does_not_match_c_times_s_is_refused():
    with pytest.raises(LelpError, match=r"the student head has 5 outputs but the data needs C·S = 2·2 = 4\."):
        DistillModule(HashedBagStudent(input_dim=64, num_outputs=5), num_classes=2, num_subclasses=2)
    module = DistillModule(HashedBagStudent(input_dim=64, num_outputs=4), num_classes=2, num_subclasses=2)
    with pytest.raises(LelpError, match=r"checkpoint's student head has C·S = 2·4 = 8 outputs but this run needs"):
        module.on_load_checkpoint({"hyper_parameters": {"num_classes": 2, "num_subclasses": 4}})


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--model.lr", "-0.01", "model.lr (the learning rate) must be a finite number > 0, got -0.01."),
    ("--model.lr", ".nan", "model.lr (the learning rate) must be a finite number > 0, got nan."),
    ("--model.weight_decay", "-1", "model.weight_decay must be a finite number >= 0, got -1.0."),
    ("--trainer.max_epochs", "0", "trainer.max_epochs must be >= 1 (or -1: no epoch limit, with max_steps or "
                                  "max_time to end the fit), got 0."),
    ("--trainer.max_steps", "0", "trainer.max_steps must be >= 1 (or -1: no step limit), got 0."),
])
def test_a_bad_training_option_is_refused_before_any_data_work(option, value, message, tmp_path):
    """Known at parse time, so refused before the data is read or the teacher runs (not a traceback after the
    teacher pass, nor a silently untrained student for max_epochs 0)."""
    cache = tmp_path / "cache"
    ran = run_main("fit", *tiny_run_args(cache, tmp_path / "run", option, value, wandb=False))
    assert (ran.returncode, "Traceback" in ran.stderr) == (2, False), ran.stderr[-2000:]
    assert [line for line in ran.stderr.splitlines() if line.startswith("lelp: error:")] == [f"lelp: error: {message}"]
    assert "teacher" not in ran.stderr and (not cache.exists() or not any(cache.iterdir()))


def test_contradicting_trainer_options_are_one_sentence(tmp_path):
    """Lightning's MisconfigurationException (here: no checkpointing asked, but the config's ModelCheckpoint) is
    bad input: one sentence, exit 2, not a traceback."""
    ran = run_main("fit", *tiny_run_args(tmp_path / "cache", tmp_path / "run", "--trainer.enable_checkpointing",
                                         "false", wandb=False))
    assert (ran.returncode, "Traceback" in ran.stderr) == (2, False), ran.stderr[-2000:]
    assert [line for line in ran.stderr.splitlines() if line.startswith("lelp: error:")] == [
        "lelp: error: Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in "
        "callbacks list; change one of the two options."]


def test_the_module_checks_its_numbers_itself():
    """The in-process API (DistillModule built by hand) says the same sentence."""
    with pytest.raises(LelpError, match=r"model.lr \(the learning rate\) must be a finite number > 0, got 0.0\."):
        DistillModule(HashedBagStudent(input_dim=64, num_outputs=2), lr=0.0)
    with pytest.raises(LelpError, match=r"model.weight_decay must be a finite number >= 0, got -0.1\."):
        DistillModule(HashedBagStudent(input_dim=64, num_outputs=2), weight_decay=-0.1)


@pytest.mark.parametrize(("content", "message"), [
    ("modle:\n  lr: 0.1\n", "{path}: Option 'modle.lr' is not accepted"),
    ("modle:\n  lr: 0.1\n", "{path}: Subcommand 'fit' does not accept option 'modle.lr'"),  # not printing
    ("model:\n  lrr: 0.1\n", "{path}: Group 'model' does not accept option 'lrr'"),
    ("model:\n  lr: [0.1\n", "{path}: not valid YAML: …',' or ']'… (line 3, column 1)."),
    ("model:\n\tlr: 0.1\n", "{path}: not valid YAML: found character '\\t' that cannot start any token "
                             "(line 2, column 1)."),
])
def test_a_config_file_typo_is_one_line_naming_the_file(content, message, tmp_path, capsys):
    """Not 65 lines of usage before the one that matters: one line, the file and what is wrong in it."""
    path = tmp_path / "mine.yaml"
    path.write_text(content)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(path),
              *([] if "Subcommand" in message else ["--print_config"])])
    assert done.value.code == 2
    err = capsys.readouterr().err
    expected = ".*".join(re.escape(part) for part in f"lelp: error: {message.format(path=path)}".split("…"))
    assert "usage:" not in err and re.fullmatch(expected, err.strip()), err[-3000:]


def test_an_unknown_option_on_the_command_line_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.lrr", "0.1", "--print_config"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" not in err and len(err.strip().splitlines()) == 1 and "lrr" in err, err[-3000:]


# -- data files ----------------------------------------------------------------------------------------------

def text_file_args(path, tmp_path, *extra):
    return ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "data/text_file.yaml"),
            "--data.source.path", str(path), "--data.cache_dir", str(tmp_path / "cache"), "--data.progress", "false",
            "--trainer.logger", "false", *extra]


def rows(*pairs, part=None):
    header = "text,label" + (",part" if part else "")
    return header + "\n" + "\n".join(",".join(p) for p in pairs) + "\n"


@pytest.mark.parametrize(("content", "extra", "message"), [
    (None, [], "data file '{path}' does not exist; expected a CSV, TSV, JSONL or Parquet file."),
    ("", [], "data file '{path}' is empty; expected a header and at least one row."),
    ("review,stars\ngood,5\n", [], "data file '{path}' has no column(s) ['text', 'label']; its columns are "
                                   "['review', 'stars']."),
    ("text,label\ngood,pos\n", ["--data.source.text_column", "review"],
     "data file '{path}' has no column(s) ['review']; its columns are ['text', 'label']."),
    ('text,label\n"a, b",pos\nc,neg,extra\n', [], "data file '{path}': record 3 has 3 fields but the header has 2; "
                                                  "check the quoting of that record."),
    ("text,label\na,pos\nb,\n", [], "data file '{path}': 1 row(s) have an empty 'label' label; every row needs one."),
    (rows(*[(f"t{i}", "pos") for i in range(9)], ("u", "neg"), ("v", "neg")), [],
     "{path}: label(s) ['neg'] have fewer than 3 rows; a stratified train/val/test split needs at least 3 per label."),
    (rows(*[(f"t{i}", "pos") for i in range(20)]), [],
     "data file '{path}': column 'label' has a single label ['pos']; distillation needs at least two classes."),
    (rows(("a", "pos", "train"), ("b", "pos", "train"), ("c", "neg", "val"), ("d", "pos", "test"), part=True),
     ["--data.source.split_column", "part"],
     "the training split has a single class (['pos']); distillation needs at least two."),
    (rows(("a", "pos", "train"), ("b", "neg", "train"), ("c", "pos", "val"), ("d", "mid", "test"), part=True),
     ["--data.source.split_column", "part"],
     "the test split has labels ['mid'] that never occur in the training split; every class needs training rows."),
])
def test_a_bad_data_file_is_one_sentence(content, extra, message, tmp_path, capsys):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    assert main(text_file_args(path, tmp_path, *extra)) == 2
    assert one_error_line(capsys) == "lelp: error: " + message.format(path=path)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # the teacher never ran


def test_a_folder_given_as_the_data_file_is_named_a_folder(tmp_path, capsys):
    path = tmp_path / "reviews"
    path.mkdir()
    assert main(text_file_args(path, tmp_path)) == 2
    assert one_error_line(capsys) == (f"lelp: error: data file '{path}' is a directory; expected a CSV, TSV, "
                                      "JSONL or Parquet file.")
    with pytest.raises(LelpError, match="is a directory; expected a CSV"):
        TextFile(str(path)).options()  # the fingerprint's file checksum says the same

def test_a_class_with_fewer_training_rows_than_s_is_refused(tweets_cache_dir, tmp_path, capsys):
    assert main(["fit", *tiny_run_args(tweets_cache_dir, tmp_path, "--data.strategy.num_subclasses", "100",
                                       wandb=False)]) == 2
    assert one_error_line(capsys) == ("lelp: error: class(es) [1] have [63] training rows, fewer than "
                                      "num_subclasses=100; lower S or add rows.")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_undecodable_bytes_and_empty_texts_are_read_the_documented_way(tmp_path, suffix):
    """Bytes that are not UTF-8 become U+FFFD; an empty text is an empty bag, so the student sees zeros."""
    path = tmp_path / f"d{suffix}"
    texts = [b"caf\xe9 latte", b"", b"ok \xff\xfe done", b"plain"]
    if suffix == ".csv":
        path.write_bytes(b"text,label\n" + b"".join(t + b",%d\n" % (i % 2) for i, t in enumerate(texts * 3)))
    else:
        path.write_bytes(b"".join(b'{"text": "' + t + b'", "label": %d}\n' % (i % 2) for i, t in enumerate(texts * 3)))
    frame = TextFile(str(path)).frame()
    assert frame["text"].tolist()[:4] == ["caf\ufffd latte", "", "ok \ufffd\ufffd done", "plain"]
    batch = HashedNgramFeaturizer(num_buckets=64).transform(frame["text"].tolist()[:4]).gather(np.arange(4))
    assert torch.diff(torch.cat([batch["offsets"], torch.tensor([len(batch["ids"])])])).tolist()[1] == 0
    student = HashedBagStudent(input_dim=64, num_outputs=2, embed_dim=3)
    bag = student.embedding(batch["ids"], batch["offsets"], per_sample_weights=batch["weights"])
    assert torch.equal(bag[1], torch.zeros(3)) and bag[0].abs().sum() > 0


# -- the teacher cache ---------------------------------------------------------------------------------------

def small_cache(tmp_path, W=None):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 4)).astype(np.float32)
    W_true, b = rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    logits = emb @ W_true.T + b
    cache = TeacherCache(tmp_path)
    build_entry(cache, PassTarget(key="k", labels=np.arange(12) % 2, row_ids=np.arange(12), embedding_dim=4,
                                  num_classes=2, meta={}, order=np.arange(12), block_size=12,
                                  encode=lambda index: (emb[index], logits[index]),
                                  classifier=lambda: (W_true if W is None else W, b)), progress=False)
    return cache


def rewrite(cache, name, change):
    """Change one array and re-sign the manifest: a cache written by other means, with valid checksums."""
    path = cache.entry("k") / f"{name}.npy"
    array = np.load(path)
    change(array)
    np.save(path, array)
    manifest = json.loads((cache.entry("k") / "manifest.json").read_text())
    manifest["arrays"][name]["sha256"] = _checksum(np.load(path, mmap_mode="r"))
    (cache.entry("k") / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("name", "value"), [("embedding", np.nan), ("logits", np.inf), ("logits", -np.inf)])
def test_nan_or_inf_in_a_cache_is_refused_on_open(tmp_path, name, value):
    cache = small_cache(tmp_path)
    rewrite(cache, name, lambda a: a.__setitem__((7, 1), value))
    with pytest.raises(LelpError, match=rf"teacher cache array {name}\.npy in .* holds NaN or Inf \(first at row 7\); "
                                        r"delete .* to rebuild, and check the teacher's outputs\."):
        cache.open("k")


def test_a_modified_classifier_fails_its_checksum_and_a_nan_one_is_never_written(tmp_path):
    cache = small_cache(tmp_path / "a")
    with np.load(cache.entry("k") / "classifier.npz") as clf:
        W, b = clf["W"].copy(), clf["b"]
    np.savez(cache.entry("k") / "classifier.npz", W=W * 2, b=b)
    with pytest.raises(LelpError, match=r"classifier.npz does not match its checksum \(corrupted or modified\)"):
        cache.open("k")
    with pytest.raises(LelpError, match=r"the teacher's classifier \(W, b\) holds NaN or Inf"):
        small_cache(tmp_path / "b", W=np.full((2, 4), np.nan, np.float32))
    assert not TeacherCache(tmp_path / "b").exists("k")


def test_a_classifier_that_does_not_produce_the_cached_logits_is_refused(tmp_path):
    check_classifier(small_cache(tmp_path / "good").open("k"))
    other = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)  # another teacher's final layer
    entry = small_cache(tmp_path / "bad", W=other).open("k")
    with pytest.raises(LelpError, match=r"does not reproduce the cached logits from the cached embeddings "
                                        r"\(largest difference .*\); expected logits = W·embedding \+ b"):
        check_classifier(entry)


@pytest.fixture
def copied_tweets_cache(tweets_cache_dir, tmp_path):
    """A private copy of the session's real MiniLM cache, to damage, and a factory for its data module."""
    cache = tmp_path / "cache"
    shutil.copytree(tweets_cache_dir, cache)

    def datamodule():
        return DistillDataModule(tiny_tweets(), tiny_teacher(), LinearProjectionStrategy(2), cache_dir=str(cache),
                                 progress=False)

    return cache, datamodule


def test_a_real_cache_whose_classifier_was_swapped_is_refused(copied_tweets_cache):
    cache, datamodule = copied_tweets_cache
    entry = cache / datamodule().plan.key("train")
    with np.load(entry / "classifier.npz") as clf:
        W, b = clf["W"], clf["b"]
    W = np.random.default_rng(1).permutation(W, axis=1)  # same shape, another teacher's layer
    np.savez(entry / "classifier.npz", W=W, b=b)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["classifier"]["sha256"] = _classifier_checksum(W, b)
    (entry / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LelpError, match="does not reproduce the cached logits"):
        datamodule().setup("fit")


def test_a_cache_entry_built_for_other_data_is_refused_not_reused(copied_tweets_cache):
    """An entry under the run's key whose manifest names other fingerprints (a copied or renamed folder)."""
    cache, datamodule = copied_tweets_cache
    dm = datamodule()
    train, val = cache / dm.plan.key("train"), cache / dm.plan.key("val")
    shutil.rmtree(train)
    shutil.copytree(val, train)
    with pytest.raises(LelpError, match=rf"the teacher cache {train} was built for another split_fingerprint "
                                        r"\(\w+, this run has \w+\); delete it to rebuild\."):
        datamodule().setup("fit")
