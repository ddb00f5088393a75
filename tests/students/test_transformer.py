"""The transformer student (a pretrained encoder truncated to k layers, fine-tuned) and its token featuriser, on a
tiny random 4-layer BERT with MiniLM's tokenizer: truncation, pooling, dynamic padding, length-bucketed batches,
learning rates, export, a fit through the CLI, and the mistakes it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import CONFIGS, run_main, tiny_run_args, tiny_tweets
from helpers import save_tiny_bert as save_bert

from lelp_lightning.data import EncoderTokenFeaturizer, HashedNgramFeaturizer
from lelp_lightning.data.dataset import CacheDataset, batch_loader
from lelp_lightning.errors import LelpError
from lelp_lightning.module import DistillModule
from lelp_lightning.samplers import GlobalBatchSampler
from lelp_lightning.students import TransformerStudent, students
from lelp_lightning.students.transformer import chosen_layers

TINY = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 64}


def save_tiny_bert(folder, seed: int) -> str:
    return save_bert(folder, seed, **TINY)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    """A tiny randomly initialised 4-layer BERT with MiniLM's tokenizer, as a local encoder folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), 0)


@pytest.fixture(scope="module")
def full_model(tiny_base):
    from transformers import BertModel

    return BertModel.from_pretrained(tiny_base, add_pooling_layer=False).eval()


def student(tiny_base, **options) -> TransformerStudent:
    torch.manual_seed(0)
    return TransformerStudent(input_dim=30522, num_outputs=4, encoder=tiny_base, **options).eval()


def texts() -> list[str]:
    return tiny_tweets().split("test").texts[:24] + ["", "☃ ünïcödé", "the end " * 80]


def test_every_other_keeps_one_layer_in_two_as_distilbert():
    assert chosen_layers(6, 3, "every_other", "m") == [0, 2, 4]  # the preset: MiniLM's 6 layers to 3
    assert chosen_layers(12, 6, "every_other", "m") == [0, 2, 4, 6, 8, 10]
    assert chosen_layers(6, 3, "first", "m") == [0, 1, 2]
    assert chosen_layers(6, None, "every_other", "m") == list(range(6))
    assert "transformer" in students and students.get("transformer") is TransformerStudent


@pytest.mark.parametrize(("num_layers", "layers", "kept"), [(2, "first", [0, 1]), (2, "every_other", [0, 2]),
                                                            (3, "every_other", [0, 1, 2]), (None, [1, 3], [1, 3]),
                                                            (None, "first", [0, 1, 2, 3])])
def test_truncation_keeps_exactly_the_named_layers_weights(tiny_base, full_model, num_layers, layers, kept):
    net = student(tiny_base, num_layers=num_layers, layers=layers)
    assert net.layers == kept and net.body.config.num_hidden_layers == len(kept)
    assert len(net.body.encoder.layer) == len(kept)
    for j, i in enumerate(kept):
        ours, theirs = net.body.encoder.layer[j].state_dict(), full_model.encoder.layer[i].state_dict()
        assert ours.keys() == theirs.keys()
        for name, tensor in theirs.items():
            torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0)
    for name, tensor in full_model.embeddings.state_dict().items():
        torch.testing.assert_close(net.body.embeddings.state_dict()[name], tensor, rtol=0, atol=0)
    assert not [k for k in net.state_dict() if "pooler" in k]  # unused: no parameters without gradients


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_pooled_output_is_the_truncated_models_last_hidden_state_pooled_by_hand(tiny_base, full_model, pooling):
    """The reference truncates by renaming the state dict's layer keys into a fresh 2-layer BERT."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    net = student(tiny_base, num_layers=2, layers="every_other", pooling=pooling)  # layers 0 and 2
    reference = BertModel(BertConfig(**{**TINY, "num_hidden_layers": 2}), add_pooling_layer=False).eval()
    renamed = {}
    for key, value in full_model.state_dict().items():
        if key.startswith("encoder.layer."):
            index, rest = key.removeprefix("encoder.layer.").split(".", 1)
            if int(index) in (0, 2):
                renamed[f"encoder.layer.{[0, 2].index(int(index))}.{rest}"] = value
        else:
            renamed[key] = value
    reference.load_state_dict(renamed)
    rows = texts()
    batch = AutoTokenizer.from_pretrained(tiny_base)(rows, padding=True, truncation=True, max_length=32,
                                                     return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state.numpy().astype(np.float64)
        pooled = net.embed(EncoderTokenFeaturizer(tiny_base, max_length=32).transform(rows).gather(
            np.arange(len(rows)))).numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    expected = (hidden * mask).sum(1) / mask.sum(1) if pooling == "mean" else hidden[:, 0]
    np.testing.assert_allclose(pooled, expected, rtol=0, atol=1e-5)


def test_tokens_are_the_tokenizers_and_a_batch_is_as_wide_as_its_longest_row(tiny_base):
    from transformers import AutoTokenizer

    rows = texts()
    inputs = EncoderTokenFeaturizer(tiny_base, max_length=32).transform(rows)
    expected = AutoTokenizer.from_pretrained(tiny_base)(rows, padding=True, truncation=True, max_length=32,
                                                        return_tensors="np")
    batch = inputs.gather(np.arange(len(rows)))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    for name, array in batch.items():
        np.testing.assert_array_equal(array.numpy(), expected[name])
    index = np.array([3, 0, 7])
    narrow = inputs.gather(index)
    lengths = expected["attention_mask"].sum(1)[index]
    assert narrow["input_ids"].shape == (3, lengths.max()) < batch["input_ids"].shape
    np.testing.assert_array_equal(narrow["attention_mask"].numpy().sum(1), lengths)


def test_a_rows_logits_do_not_depend_on_the_batch_it_is_padded_in(tiny_base):
    net = student(tiny_base, num_layers=3)
    inputs = EncoderTokenFeaturizer(tiny_base, max_length=32).transform(texts())
    with torch.no_grad():
        together = net(inputs.gather(np.arange(len(inputs)))).numpy()
        alone = np.concatenate([net(inputs.gather(np.array([i]))).numpy() for i in range(len(inputs))])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


def test_tokens_are_cached_once_per_split_and_read_back(tiny_base, tmp_path):
    from lelp_lightning.cache import TeacherCache

    source, cache = tiny_tweets(), TeacherCache(tmp_path)
    featurizer = EncoderTokenFeaturizer(tiny_base, max_length=32)
    featurizer.prepare(source, cache)
    files = sorted(tmp_path.glob("tokens-*.npz"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    EncoderTokenFeaturizer(tiny_base, max_length=32, bucket_batches=7).prepare(source, cache)  # same ids: same files
    assert [f.stat().st_mtime_ns for f in files] == stamps and len(list(tmp_path.glob("tokens-*"))) == 3
    read = featurizer.featurize(source, "val", cache)
    fresh = featurizer.transform(source.split("val").texts)
    np.testing.assert_array_equal(read.ids, fresh.ids)
    np.testing.assert_array_equal(read.offsets, fresh.offsets)
    EncoderTokenFeaturizer(tiny_base, max_length=16).prepare(source, cache)  # other ids: other files
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 6


@pytest.fixture(scope="module")
def tweet_lengths() -> np.ndarray:
    """Token counts of 2,000 real tweets (MiniLM's tokenizer, at most 64)."""
    from lelp_lightning.sources import Tweets

    rows = Tweets(num_classes=2, max_rows=2000, seed=0).split("train").texts
    return EncoderTokenFeaturizer(max_length=64).transform(rows).lengths


def padded_tokens(batches, lengths) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in batches)


def test_length_bucketed_batches_hold_every_row_once_are_seeded_and_pad_less(tweet_lengths):
    n = len(tweet_lengths)

    def epoch(seed=0, epoch=0, world=1, rank=0, lengths=tweet_lengths):
        sampler = GlobalBatchSampler(n, 32, world, rank, seed=seed, lengths=lengths, bucket_batches=10)
        sampler.set_epoch(epoch)
        return [b.copy() for b in sampler]

    bucketed = epoch()
    assert len(bucketed) == len(GlobalBatchSampler(n, 32, lengths=tweet_lengths, bucket_batches=10))
    np.testing.assert_array_equal(np.sort(np.concatenate(bucketed)), np.arange(n))
    assert sorted(len(b) for b in bucketed) == sorted([32] * (n // 32) + [n % 32] * (n % 32 > 0))
    again = epoch()
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, epoch(epoch=1), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, epoch(seed=1), strict=True))
    ranks = [epoch(world=2, rank=r) for r in range(2)]  # two processes read the one-process batches
    for step, rows in enumerate(bucketed):
        np.testing.assert_array_equal(np.concatenate([ranks[0][step], ranks[1][step]]), rows)
    plain = epoch(lengths=None)
    assert padded_tokens(bucketed, tweet_lengths) < 0.75 * padded_tokens(plain, tweet_lengths)
    assert padded_tokens(bucketed, tweet_lengths) < 1.1 * tweet_lengths.sum()


def test_the_training_loader_buckets_token_inputs_and_nothing_else(tweet_lengths):
    offsets = np.concatenate([[0], np.cumsum(tweet_lengths)])
    from lelp_lightning.data.token_featurizer import TokenIdInputs

    bucketing = TokenIdInputs(np.ones(offsets[-1], np.int64), offsets, 0, ("input_ids", "attention_mask"), 10)
    loader = batch_loader(CacheDataset(bucketing, {}), "train", 32, shuffle=True)
    widths = [batch["inputs"]["input_ids"].shape[1] for batch in loader]
    sampler = GlobalBatchSampler(len(tweet_lengths), 32, lengths=tweet_lengths, bucket_batches=10)
    assert widths == [int(tweet_lengths[b].max()) for b in sampler]
    plain = TokenIdInputs(np.ones(offsets[-1], np.int64), offsets, 0, ("input_ids",), bucket_batches=1)
    loader = batch_loader(CacheDataset(plain, {}), "train", 32, shuffle=True)
    assert [b.tolist() for b in loader.sampler] == [b.tolist() for b in GlobalBatchSampler(len(tweet_lengths), 32)]


def test_a_new_student_trains_in_train_mode(tiny_base):
    """from_pretrained leaves a model in eval mode, and Lightning keeps the modes it finds: dropout must be on."""
    net = TransformerStudent(input_dim=30522, num_outputs=4, encoder=tiny_base, num_layers=2)
    assert all(module.training for module in net.modules())


def test_body_and_head_reach_the_optimiser_with_their_own_learning_rates(tiny_base):
    def groups(**options):
        model = DistillModule(student(tiny_base, num_layers=2, **options), num_classes=2, num_subclasses=2, lr=5e-5)
        optimiser = model.configure_optimizers()
        return model, optimiser.param_groups

    model, param_groups = groups(head_lr=1e-3)
    lr_of = {id(p): group["lr"] for group in param_groups for p in group["params"]}
    assert sum(len(group["params"]) for group in param_groups) == len(lr_of) == len(list(model.parameters()))
    assert {lr_of[id(p)] for p in model.student.body.parameters()} == {5e-5}
    assert {lr_of[id(p)] for p in model.student.head.parameters()} == {1e-3}
    model, param_groups = groups(body_lr=2e-5, head_lr=3e-4)
    lr_of = {id(p): group["lr"] for group in param_groups for p in group["params"]}
    assert {lr_of[id(p)] for p in model.student.body.parameters()} == {2e-5}
    assert {lr_of[id(p)] for p in model.student.head.parameters()} == {3e-4}


def one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message.endswith(".") and "\n" not in message, message
    return message


def test_bad_layers_and_mismatched_encoders_are_one_sentence(tiny_base, tmp_path):
    with pytest.raises(LelpError, match=r"increasing layer indices from 0 to 3") as error:
        student(tiny_base, num_layers=None, layers=[0, 4])
    one_sentence(error)
    with pytest.raises(LelpError, match="num_layers is 5, but the encoder") as error:
        student(tiny_base, num_layers=5)
    one_sentence(error)
    with pytest.raises(LelpError, match="num_layers is 3 but layers lists 2") as error:
        student(tiny_base, num_layers=3, layers=[0, 1])
    one_sentence(error)
    with pytest.raises(LelpError, match="expected one of") as error:
        student(tiny_base, layers="last")
    one_sentence(error)
    with pytest.raises(LelpError, match="input_dim is 262144") as error:
        TransformerStudent(input_dim=2**18, num_outputs=4, encoder=tiny_base, num_layers=2)
    one_sentence(error)
    net = student(tiny_base, num_layers=2)
    net.start_from(EncoderTokenFeaturizer(tiny_base))  # its own encoder: fine
    other = save_tiny_bert(tmp_path / "other", 1)
    with pytest.raises(LelpError, match="is not the featuriser's") as error:
        net.start_from(EncoderTokenFeaturizer(other))
    one_sentence(error)
    with pytest.raises(LelpError, match="use EncoderTokenFeaturizer") as error:
        net.start_from(HashedNgramFeaturizer(num_buckets=256))
    one_sentence(error)
    with pytest.raises(LelpError, match="is not the featuriser's") as error:
        net.export_module(EncoderTokenFeaturizer(other).export_spec())
    one_sentence(error)


@pytest.fixture(scope="module")
def fitted(tweets_cache_dir, tmp_path_factory, tiny_base):
    """The preset (configs/student/transformer.yaml) with the tiny encoder (3 of its 4 layers), one epoch on the
    tiny tweets through `lelp fit`, then `lelp export` of its checkpoint."""
    from serving.exports import fit_and_export

    root = tmp_path_factory.mktemp("transformer")
    return fit_and_export(root, *tiny_run_args(
        tweets_cache_dir, root, "--config", str(CONFIGS / "student/transformer.yaml"),
        "--data.featurizer.init_args.encoder", tiny_base, "--model.student.init_args.encoder", tiny_base,
        "--trainer.max_epochs", "1", wandb=False))


def test_a_fit_runs_end_to_end_and_its_export_equals_eager_pytorch_without_torch(fitted, tiny_base):
    from serving.exports import assert_matches_eager, modules_imported_by_prediction

    summary = json.loads((fitted.config.parent / "summary.json").read_text())
    assert 0.0 <= summary["student"]["test_accuracy"] <= 1.0
    saved = torch.load(fitted.ckpt, weights_only=True, map_location="cpu")["state_dict"]
    assert len({k.split(".")[4] for k in saved if k.startswith("student.body.encoder.layer.")}) == 3
    spec = json.loads((fitted.folder / "featurizer.json").read_text())
    assert (spec["kind"], spec["max_length"], spec["encoder"]) == ("encoder_tokens", 64, tiny_base)
    assert_matches_eager(fitted)  # raw text → tokens → the fine-tuned encoder in ONNX, within 1e-5, on the test split
    heavy, probabilities = modules_imported_by_prediction(fitted.folder, "['what a great day', 'awful traffic']")
    assert heavy == [] and np.asarray(probabilities).shape == (2, 2)


def test_a_fit_whose_student_and_featuriser_read_other_encoders_is_one_sentence(tweets_cache_dir, tmp_path,
                                                                                 tiny_base):
    other = save_tiny_bert(tmp_path / "other", 1)
    ran = run_main("fit", *tiny_run_args(
        tweets_cache_dir, tmp_path, "--config", str(CONFIGS / "student/transformer.yaml"),
        "--data.featurizer.init_args.encoder", other, "--model.student.init_args.encoder", tiny_base,
        "--trainer.max_epochs", "1", wandb=False))
    assert ran.returncode == 2
    assert "is not the featuriser's" in ran.stderr and "Traceback" not in ran.stderr
