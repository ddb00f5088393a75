"""The static-embedding student: its table is model2vec's distilled table, its pooled embedding model2vec's
``encode``, its sparse path the dense one's gradients; it fits, exports (served without torch) and distils once."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import CONFIGS, run_main, save_tiny_bert, tiny_run_args, tiny_tweets
from serving.exports import assert_matches_eager, fit_and_export, modules_imported_by_prediction

from lelp_lightning.cache import TeacherCache
from lelp_lightning.data import HashedNgramFeaturizer, StaticTokenFeaturizer
from lelp_lightning.data.static_featurizer import MARKER
from lelp_lightning.errors import LelpError
from lelp_lightning.students import StaticEmbeddingStudent

PCA, MAX_LENGTH = 8, 16


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with MiniLM's tokenizer, saved as a local encoder folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="module")
def featurizer(tiny_encoder, tmp_path_factory) -> StaticTokenFeaturizer:
    """The featuriser on the tiny encoder, its table distilled into a cache of its own."""
    featurizer = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA, max_length=MAX_LENGTH)
    featurizer.use_cache(TeacherCache(tmp_path_factory.mktemp("static-cache")))
    assert featurizer.input_dim > 0  # distils
    return featurizer


def texts() -> list[str]:
    """Real tweets and the edge cases: empty, only unknown characters, longer than max_length tokens and than
    max_length × the median token length in characters."""
    return tiny_tweets().split("test").texts[:40] + ["", "☃", "the end " * 80]


def pooled(student: StaticEmbeddingStudent, featurizer: StaticTokenFeaturizer, rows: list[str]) -> np.ndarray:
    with torch.no_grad():
        return student.embed(featurizer.transform(rows).gather(np.arange(len(rows)))).numpy()


def started(featurizer, **kwargs) -> StaticEmbeddingStudent:
    student = StaticEmbeddingStudent(featurizer.input_dim, 4, embed_dim=PCA, **kwargs)
    student.start_from(featurizer)
    return student.eval()


def test_the_table_starts_as_model2vecs_distilled_table(featurizer, tiny_encoder):
    from model2vec.distill import distill

    reference = distill(model_name=tiny_encoder, pca_dims=PCA, sif_coefficient=1e-4, quantize_to="float32")
    assert featurizer.input_dim == len(reference.tokens) == reference.embedding.shape[0]
    assert featurizer.embedding_dim == PCA == reference.embedding.shape[1]
    loaded = featurizer.static_model
    assert loaded.tokens == reference.tokens  # row i is the same token
    np.testing.assert_allclose(featurizer.initial_table(), reference.embedding, rtol=0, atol=1e-6)
    student = started(featurizer, hidden_dim=16)
    np.testing.assert_array_equal(student.embedding.weight.detach().numpy(), featurizer.initial_table())


def numpy_pooled(featurizer: StaticTokenFeaturizer, rows: list[str]) -> np.ndarray:
    """By hand: cut to max_length × the median token length, tokenise without special tokens, truncate, drop the
    unknown token, mean of the table's rows (a zero vector for no tokens)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(featurizer.folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_LENGTH)
    tokens = featurizer.static_model.tokens
    median = int(np.median([len(t) for t in tokens]))
    unk = tokenizer.token_to_id("[UNK]")
    table = featurizer.initial_table()
    out = np.zeros((len(rows), table.shape[1]), np.float32)
    for i, text in enumerate(rows):
        ids = [t for t in tokenizer.encode(text[: MAX_LENGTH * median], add_special_tokens=False).ids if t != unk]
        if ids:
            out[i] = table[ids].mean(0)
    return out


def test_the_pooled_embedding_is_model2vecs_encode(featurizer):
    from model2vec import StaticModel

    rows = texts()
    model = StaticModel.from_pretrained(featurizer.folder)
    assert model.normalize  # a distilled model normalises by default: the student's normalize option
    student = started(featurizer, hidden_dim=0)
    mean = pooled(student, featurizer, rows)
    np.testing.assert_allclose(mean, numpy_pooled(featurizer, rows), rtol=0, atol=1e-6)
    np.testing.assert_allclose(mean, model.encode(rows, max_length=MAX_LENGTH, normalize=False), rtol=0, atol=1e-6)
    assert not mean[-3:-1].any() and mean[-1].any()  # empty and unknown-only rows pool to zero
    normalized = pooled(started(featurizer, hidden_dim=0, normalize=True), featurizer, rows)
    np.testing.assert_allclose(normalized, model.encode(rows, max_length=MAX_LENGTH), rtol=0, atol=1e-6)


def test_sparse_gradients_equal_the_dense_ones(featurizer):
    dense = started(featurizer, hidden_dim=16, sparse=False).train()
    sparse = StaticEmbeddingStudent(featurizer.input_dim, 4, embed_dim=PCA, hidden_dim=16, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    rows = texts()
    inputs = featurizer.transform(rows).gather(np.arange(len(rows)))
    target = torch.randint(0, 4, (len(rows),), generator=torch.Generator().manual_seed(0))
    for student in (dense, sparse):
        torch.nn.functional.cross_entropy(student(inputs), target).backward()
    assert sparse.embedding.weight.grad.is_sparse and not dense.embedding.weight.grad.is_sparse
    torch.testing.assert_close(sparse.embedding.weight.grad.to_dense(), dense.embedding.weight.grad, rtol=0,
                               atol=1e-7)
    assert dense.embedding.weight.grad.abs().sum() > 0
    for (name, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters(), strict=True):
        if name != "embedding.weight":
            torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-7)


def fit_args(cache, run, tiny_encoder, *extra):
    return tiny_run_args(cache, run, "--config", str(CONFIGS / "student/static.yaml"),
                         "--data.featurizer.init_args.encoder", tiny_encoder,
                         "--data.featurizer.init_args.pca_dims", str(PCA),
                         "--model.student.init_args.embed_dim", str(PCA),
                         "--model.student.init_args.hidden_dim", "16",
                         "--trainer.max_epochs", "1", *extra, wandb=False)


@pytest.fixture(scope="module")
def fitted(tiny_encoder, tweets_cache_dir, tmp_path_factory):
    """A real fit of the preset on the tiny tweets and encoder (its table distilled in a fresh copy of the teacher
    cache), exported with ``lelp export``."""
    root = tmp_path_factory.mktemp("static-fit")
    cache = root / "cache"
    shutil.copytree(tweets_cache_dir, cache)
    exported = fit_and_export(root / "one", *fit_args(cache, root / "one", tiny_encoder))
    return root, cache, exported


def test_a_fit_starts_from_the_distilled_table_and_a_second_fit_distils_nothing(fitted, tiny_encoder, monkeypatch):
    import model2vec.distill

    root, cache, exported = fitted
    (table,) = [p.parent for p in cache.glob(f"static-*/{MARKER}")]
    assert not list(cache.glob(".static-*.tmp*"))
    featurizer = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA)
    featurizer.use_cache(TeacherCache(cache))
    state = torch.load(exported.ckpt, map_location="cpu", weights_only=True)["state_dict"]
    trained = state["student.embedding.weight"].numpy()
    assert trained.shape == (featurizer.input_dim, PCA)
    # lazy Adam moves only the rows a batch touches: the others are still the distilled rows
    used = np.unique(featurizer.transform(tiny_tweets().split("train").texts).ids)
    untouched = np.setdiff1d(np.arange(len(trained)), used)
    np.testing.assert_array_equal(trained[untouched], featurizer.initial_table()[untouched])
    assert not np.allclose(trained[used], featurizer.initial_table()[used])

    monkeypatch.setattr(model2vec.distill, "distill", lambda *a, **k: pytest.fail("distilled a second time"))
    stamps = {p: p.stat().st_mtime_ns for p in [table / MARKER, *cache.glob("static-tokens-*.npz")]}
    assert len(stamps) == 4  # the marker and one bag file per split
    ran = run_main("fit", *fit_args(cache, root / "two", tiny_encoder))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [p.parent for p in cache.glob(f"static-*/{MARKER}")] == [table]


def test_the_export_equals_eager_on_the_test_split_and_serves_without_torch(fitted):
    _, _, exported = fitted
    assert_matches_eager(exported)
    assert sorted(p.name for p in exported.folder.iterdir()) == ["featurizer.json", "labels.json", "model_card.json",
                                                                  "model_card.md", "student.onnx", "tokenizer.json"]
    spec = json.loads((exported.folder / "featurizer.json").read_text())
    assert (spec["kind"], spec["max_length"], spec["inputs"]) == ("static_tokens", 512, ["ids", "weights"])
    heavy, probabilities = modules_imported_by_prediction(exported.folder, "['what a great day', '', '☃']")
    assert heavy == []
    assert np.allclose(np.sum(probabilities, axis=1), 1, atol=1e-6)  # empty and unknown-only rows still served


class Distillations:
    """model2vec's distill counted (and answered from an already distilled folder, to stay fast)."""

    def __init__(self, folder):
        self.folder, self.calls = folder, 0

    def __call__(self, **options):
        from model2vec import StaticModel

        self.calls += 1
        return StaticModel.from_pretrained(self.folder)


def test_a_killed_or_half_built_distillation_is_never_read_as_complete(featurizer, tiny_encoder, tmp_path,
                                                                        monkeypatch):
    import model2vec.distill
    from model2vec import StaticModel

    fresh = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA, max_length=MAX_LENGTH)
    fresh.use_cache(TeacherCache(tmp_path))
    target = tmp_path / fresh.table_key

    class KilledWhileSaving(StaticModel):  # the process dies after the first file of the folder
        def save_pretrained(self, path, **kwargs):
            path.mkdir(parents=True)
            shutil.copy(featurizer.folder / "tokenizer.json", path)
            raise KeyboardInterrupt

    monkeypatch.setattr(model2vec.distill, "distill", lambda **k: KilledWhileSaving.from_pretrained(featurizer.folder))
    with pytest.raises(KeyboardInterrupt):
        _ = fresh.input_dim
    assert not target.exists() and list(tmp_path.glob(f".{target.name}.tmp*"))  # only a temporary folder is left
    shutil.copytree(featurizer.folder, target, ignore=shutil.ignore_patterns(MARKER))  # a folder without its marker

    distillations = Distillations(featurizer.folder)
    monkeypatch.setattr(model2vec.distill, "distill", distillations)
    again = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA, max_length=MAX_LENGTH)
    again.use_cache(TeacherCache(tmp_path))
    assert again.input_dim == featurizer.input_dim and distillations.calls == 1
    assert (target / MARKER).is_file() and not list(tmp_path.glob(f".{target.name}.tmp*"))
    np.testing.assert_array_equal(again.initial_table(), featurizer.initial_table())
    third = StaticTokenFeaturizer(tiny_encoder, pca_dims=PCA)
    third.use_cache(TeacherCache(tmp_path))
    assert third.input_dim == featurizer.input_dim and distillations.calls == 1  # found, not distilled


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message.endswith(".") and "\n" not in message, message
    return message


def test_bad_input_is_one_sentence(featurizer, tiny_encoder, tmp_path, monkeypatch):
    with pytest.raises(LelpError) as err:
        StaticEmbeddingStudent(featurizer.input_dim, 4, embed_dim=PCA * 2).start_from(featurizer)
    assert "embed_dim is 16" in one_sentence(err) and f"pca_dims: {PCA}" in one_sentence(err)
    with pytest.raises(LelpError) as err:
        StaticEmbeddingStudent(256, 4, embed_dim=PCA).start_from(HashedNgramFeaturizer(num_buckets=256))
    assert "HashedNgramFeaturizer has none" in one_sentence(err)
    with pytest.raises(LelpError) as err:
        StaticTokenFeaturizer(str(tmp_path / "no-such-encoder"))
    assert "no-such-encoder" in one_sentence(err)
    with pytest.raises(LelpError) as err:
        StaticTokenFeaturizer(tiny_encoder, sif_coefficient=1.5)
    assert "sif_coefficient" in one_sentence(err)
    with pytest.raises(LelpError) as err:
        _ = StaticTokenFeaturizer(tiny_encoder).input_dim
    assert "use_cache" in one_sentence(err)
    with pytest.raises(LelpError) as err:
        StaticEmbeddingStudent(100, 4, sparse=False, table_optimizer="rowwise_adagrad")
    assert one_sentence(err).startswith("static's table_optimizer")
    without_model2vec = StaticTokenFeaturizer(tiny_encoder)
    without_model2vec.use_cache(TeacherCache(tmp_path))
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "model2vec", None)  # what `import model2vec` sees when it is not installed
        with pytest.raises(LelpError) as err:
            _ = without_model2vec.input_dim
    assert one_sentence(err) == ("the static-embedding student needs the [static] extra (model2vec is not installed): "
                                 "pip install 'lelp-lightning[static]'.")
    ran = run_main("fit", *fit_args(tmp_path / "cache", tmp_path / "run", str(tmp_path / "no-such-encoder")))
    assert ran.returncode == 2
    lines = [line for line in ran.stderr.splitlines() if line.startswith("lelp: error:")]
    assert len(lines) == 1 and "no-such-encoder" in lines[0], ran.stderr[-2000:]
