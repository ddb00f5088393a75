"""The prompted causal-LM teacher on tiny randomly initialised GPT-2 and Llama models with a byte-level BPE tokenizer
built here (no download): its scores and hidden states against the model's own forward, its final linear layer, its
errors, a `lelp fit` end to end with the cache reused, and a two-process pass equal to one process."""

from __future__ import annotations

import filecmp
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, TINY_TWEETS, run_lelp, run_main, tiny_tweets, write_logger_config

from lelp_lightning.cache import CachePlan, TeacherCache
from lelp_lightning.teachers import PromptedLMTeacher

TEMPLATE = "Tweet:\n{text}\nSentiment:"
SINGLE = {"negative": " negative", "positive": " positive"}
MULTI = {"negative": [" very bad", " negative"], "positive": " positive great"}  # alternatives, several tokens


def tiny_tokenizer(bos: bool):
    """A byte-level BPE (GPT-2's pre-tokenisation: a word's leading space is part of its token) trained on the tiny
    tweets, where ' negative' and ' positive' are single tokens; with ``bos`` it prepends <s> like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = tiny_tweets().split("train").texts + ["Sentiment: negative positive very bad great"] * 300
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory) -> dict[str, str]:
    """Two tiny causal LMs saved with their tokenizers: 'gpt2' (no BOS, tied head) and 'llama' (BOS)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folders = {}
    for name, bos in (("gpt2", False), ("llama", True)):
        tokenizer = tiny_tokenizer(bos)
        torch.manual_seed(0)
        if name == "gpt2":
            net = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2,
                                             n_positions=512, initializer_range=0.3))
        else:
            net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                               max_position_embeddings=512, initializer_range=0.3))
        folders[name] = str(tmp_path_factory.mktemp(name))
        net.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def load(folder: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@functools.cache
def texts() -> list[str]:
    """Test tweets of different lengths (the teacher pads them in one batch)."""
    rows = tiny_tweets().split("test").texts
    picked = [rows[0], rows[1] + " " + rows[2] + " " + rows[3], rows[4][:5], "ok"]
    assert len({len(t) for t in picked}) == len(picked)
    return picked


@torch.inference_mode()
def hand_scores(folder: str, verbalizers: dict, normalize: bool) -> np.ndarray:
    """log p(verbalizer | prompt) by one unpadded forward of prompt + verbalizer per text and alternative: the
    verbalizer's tokens are what follows the prompt's in the whole string's tokenisation."""
    net, tok = load(folder)
    out = np.zeros((len(texts()), len(verbalizers)))
    for i, text in enumerate(texts()):
        prompt = TEMPLATE.replace("{text}", text)
        n = len(tok(prompt)["input_ids"])
        for c, words in enumerate(verbalizers.values()):
            per_word = []
            for word in [words] if isinstance(words, str) else words:
                ids = tok(prompt + word)["input_ids"]
                log_probs = net(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
                tokens = [log_probs[p - 1, ids[p]].item() for p in range(n, len(ids))]
                per_word.append(sum(tokens) / (len(tokens) if normalize else 1))
            out[i, c] = np.logaddexp.reduce(per_word)
    return out


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("normalize", [False, True])
def test_verbalizer_log_probabilities_equal_the_models_forward_in_a_padded_batch(tiny_lms, model, normalize):
    teacher = PromptedLMTeacher(tiny_lms[model], template=TEMPLATE, verbalizers=MULTI, normalize_by_length=normalize,
                                precision="fp32")
    assert not teacher.exact and [len(t) for t in teacher._reference_tokens] == [2, 1, 2]
    _, scores = teacher.lm_outputs(texts())
    np.testing.assert_allclose(scores, hand_scores(tiny_lms[model], MULTI, normalize), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@torch.inference_mode()
def test_the_embedding_is_the_last_hidden_state_at_the_final_prompt_token_or_its_mean_over_the_text(tiny_lms, model):
    net, tok = load(tiny_lms[model])
    last, mean = [], []
    for text in texts():
        head = TEMPLATE.split("{text}")[0]
        prompt = TEMPLATE.replace("{text}", text)
        hidden = net(input_ids=torch.tensor([tok(prompt)["input_ids"]]), output_hidden_states=True).hidden_states[-1]
        last.append(hidden[0, -1].numpy())
        lo, hi = len(tok(head)["input_ids"]), len(tok(head + text)["input_ids"])  # '\n' splits: clean bounds
        mean.append(hidden[0, lo:hi].mean(0).numpy())
    for pooling, expected in (("last", last), ("mean", mean)):
        teacher = PromptedLMTeacher(tiny_lms[model], template=TEMPLATE, verbalizers=SINGLE, pooling=pooling,
                                    precision="fp32")
        np.testing.assert_allclose(teacher.lm_outputs(texts())[0], np.stack(expected), rtol=1e-5, atol=1e-5)


def test_single_token_verbalizers_make_the_lm_head_rows_the_final_layer(tiny_lms):
    net, tok = load(tiny_lms["gpt2"])
    teacher = PromptedLMTeacher(tiny_lms["gpt2"], template=TEMPLATE, verbalizers=SINGLE, precision="fp32")
    assert teacher.exact
    embedding, logits = teacher.encode(texts())
    W, b = teacher.classifier()
    ids = [tok(" negative", add_special_tokens=False)["input_ids"][0], tok(" positive", add_special_tokens=False)[
        "input_ids"][0]]
    np.testing.assert_array_equal(W, net.lm_head.weight[ids].detach().numpy())
    np.testing.assert_array_equal(b, np.zeros(2, np.float32))  # GPT-2's head has no bias
    np.testing.assert_allclose(embedding @ W.T + b, logits, rtol=1e-6, atol=1e-6)
    # the raw scores differ from the verbalizer log-probabilities by one constant per row: same class probabilities
    shift = logits - hand_scores(tiny_lms["gpt2"], SINGLE, normalize=False)
    np.testing.assert_allclose(shift, shift[:, :1].repeat(2, 1), rtol=1e-5, atol=1e-5)


def test_bf16_scores_stay_close_to_fp32(tiny_lms):
    fp32 = PromptedLMTeacher(tiny_lms["llama"], template=TEMPLATE, verbalizers=MULTI, precision="fp32")
    bf16 = PromptedLMTeacher(tiny_lms["llama"], template=TEMPLATE, verbalizers=MULTI, precision="bf16")
    assert fp32.fingerprint() != bf16.fingerprint()
    np.testing.assert_allclose(bf16.lm_outputs(texts())[1], fp32.lm_outputs(texts())[1], atol=0.1)


@pytest.mark.parametrize("verbalizers", [SINGLE, pytest.param(MULTI, marks=pytest.mark.slow)])
def test_the_cache_opens_with_either_classifier_and_the_probe_is_lstsq_from_h(tiny_lms, tmp_path, verbalizers):
    source = tiny_tweets()
    teacher = PromptedLMTeacher(tiny_lms["llama"], template=TEMPLATE, verbalizers=verbalizers, precision="fp32",
                                max_length=24, batch_size=8)
    plan = CachePlan(TeacherCache(tmp_path), teacher, source)
    plan.build(progress=False)
    entries = plan.open()  # refuses a cache whose W·embedding + b is not its logits
    rows = source.split("test").texts[:6]
    np.testing.assert_allclose(entries["test"].logits[:6], teacher.lm_outputs(rows)[1], rtol=1e-4, atol=1e-4)
    if verbalizers is MULTI:  # the embedding is h itself, the classifier numpy's lstsq of h → scores on train rows
        assert not teacher.exact_classifier
        np.testing.assert_allclose(entries["test"].embedding[:6], teacher.lm_outputs(rows)[0], rtol=1e-4, atol=1e-4)
        h = np.asarray(entries["train"].embedding, np.float64)
        assert h.shape[1] == 16  # the hidden size: no residual columns
        theta = np.linalg.lstsq(np.hstack([h, np.ones((len(h), 1))]), np.asarray(entries["train"].logits, np.float64),
                                rcond=None)[0]
        for split in ("train", "val", "test"):
            assert entries[split].manifest["meta"]["classifier"] == "least_squares_probe"
            np.testing.assert_allclose(entries[split].W, theta[:16].T, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(entries[split].b, theta[16], rtol=1e-4, atol=1e-4)
        lm = {split: TeacherCache(tmp_path).open(teacher.lm_key(source, split)) for split in ("train", "val", "test")}
        for split, entry in lm.items():  # the teacher's entries are the cached LM outputs
            np.testing.assert_array_equal(entries[split].embedding, entry.embedding)
            np.testing.assert_array_equal(entries[split].logits, entry.logits)
        assert not list(tmp_path.glob("probe-*"))
    else:
        assert teacher.exact_classifier and "classifier" not in entries["train"].manifest["meta"]
        assert entries["train"].embedding.shape[1] == 16 and not list(tmp_path.glob("lm-*"))


def test_the_fingerprint_follows_the_template_the_verbalizers_and_the_model_files(tiny_lms, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_lms["gpt2"], folder)
    teacher = lambda **kw: PromptedLMTeacher(str(folder), **{"template": TEMPLATE, "verbalizers": SINGLE,  # noqa: E731
                                                             "precision": "fp32", **kw})
    base = teacher().fingerprint()
    assert teacher().fingerprint() == base
    assert teacher(template="Tweet: {text}\nMood:").fingerprint() != base
    assert teacher(verbalizers={"negative": " bad", "positive": " positive"}).fingerprint() != base
    assert teacher(examples=[{"text": "yay", "label": "positive"}]).fingerprint() != base
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 1}))
    assert teacher().fingerprint() != base


def test_few_shot_examples_render_with_their_verbalizers(tiny_lms):
    teacher = PromptedLMTeacher(tiny_lms["gpt2"], template="{examples}Tweet: {text}\nSentiment:", verbalizers=MULTI,
                                examples=[{"text": "so good", "label": "positive"},
                                          {"text": "awful", "label": "negative"}])
    assert teacher.render("hi")[0] == ("Tweet: so good\nSentiment: positive great\n\nTweet: awful\nSentiment: very bad"
                                       "\n\nTweet: hi\nSentiment:")


# -- through the command line ------------------------------------------------------------------------------------

def lm_run_args(cache_dir: Path, run_dir: Path, model: str, *extra: str) -> list[str]:
    """`lelp fit` options for the tiny tweets with the shipped prompted-LM preset pointed at a tiny model."""
    return ["--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "data" / "tweets_binary.yaml"),
            "--config", str(CONFIGS / "teacher" / "prompted_lm.yaml"), "--data.teacher.model", model,
            "--data.teacher.precision", "fp32", "--data.teacher.max_length", "24", "--data.teacher.batch_size", "8",
            "--data.source.max_rows", str(TINY_TWEETS["max_rows"]), "--data.cache_dir", str(cache_dir),
            "--data.progress", "false", "--data.batch_size", "32", "--data.featurizer.num_buckets", "4096",
            "--data.strategy.num_subclasses", "2", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(run_dir), "--config", str(write_logger_config(run_dir, wandb=False)),
            *extra]


@pytest.mark.parametrize(("option", "said"), [
    (["--data.teacher.template", "Sentiment:"], "has no '{text}' placeholder"),
    (["--data.teacher.verbalizers", "{negative: '', positive: ' positive'}"], "the verbalizer of class 'negative' "
                                                                             "is empty"),
    (["--data.teacher.verbalizers", "{bad: ' bad', good: ' good'}", "--data.teacher.examples", "null"],
     "the verbalizers name the classes ['bad', "
                                                                     "'good'] but the data has the classes"),
])
def test_a_wrong_prompt_or_verbalizer_is_one_sentence_and_exit_2(tiny_lms, tmp_path, option, said):
    ran = run_main("fit", *lm_run_args(tmp_path / "cache", tmp_path / "runs", tiny_lms["gpt2"], *option))
    errors = [line for line in ran.stderr.splitlines() if line.startswith("lelp: error")]
    assert ran.returncode == 2 and len(errors) == 1 and said in errors[0], ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr


def test_lelp_fit_runs_with_the_lm_teacher_and_reuses_its_cache(tiny_lms, tmp_path):
    cache = tmp_path / "cache"
    first = run_main("fit", *lm_run_args(cache, tmp_path / "one", tiny_lms["llama"]))
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(next((tmp_path / "one").rglob("summary.json")).read_text())
    assert 0 <= summary["student"]["test_accuracy"] <= 1
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(entries) == 3  # one per split: single-token verbalizers, no LM entries, no probe
    second = run_main("fit", *lm_run_args(cache, tmp_path / "two", tiny_lms["llama"]))
    assert second.returncode == 0 and "teacher cache hit" in second.stderr, second.stderr[-3000:]
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == entries


@pytest.mark.slow
def test_a_two_process_pass_of_a_probed_lm_teacher_equals_one_process(tiny_lms, tmp_path):
    multi = ["--data.teacher.verbalizers", json.dumps(MULTI), "--data.teacher.pooling", "mean"]
    caches = {}
    for name, devices in (("one", ["--trainer.devices", "1"]), ("two", ["--trainer.devices", "2",
                                                                        "--trainer.strategy", "ddp"])):
        caches[name] = tmp_path / name / "cache"
        args = lm_run_args(caches[name], tmp_path / name, tiny_lms["llama"], *multi, *devices)
        ran = run_main("cache", *args) if name == "one" else run_lelp("cache", *args, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr[-3000:]
    entries = sorted(p.name for p in caches["one"].iterdir() if p.is_dir())
    assert len(entries) == 6 and sum(e.startswith("lm-") for e in entries) == 3  # LM outputs, then the teacher's
    assert entries == sorted(p.name for p in caches["two"].iterdir() if p.is_dir())
    for entry in entries:  # the same rows, labels and classifier; the same outputs up to float32 rounding
        one, two = TeacherCache(caches["one"]).open(entry), TeacherCache(caches["two"]).open(entry)
        for name in ("embedding", "logits"):
            np.testing.assert_allclose(getattr(two, name), getattr(one, name), rtol=0, atol=1e-6)
        same = ["row_id.npy", "label.npy", "classifier.npz"]
        _, mismatch, errors = filecmp.cmpfiles(caches["one"] / entry, caches["two"] / entry, same, shallow=False)
        assert not mismatch and not errors, (entry, mismatch, errors)
