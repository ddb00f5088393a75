"""A prompted causal language model as the teacher: a class's score is the log-probability of its verbalizer.

Each text is put into a prompt (``template`` with ``{text}`` and optionally ``{examples}``, few-shot examples
rendered by ``example_template``); class c's score is log p(verbalizer_c | prompt), summed over the verbalizer's
tokens (optionally divided by their number), logsumexp over a class's alternative verbalizers. The embedding is the
last layer's hidden state at the prompt's final token (``pooling="last"``) or averaged over the text's tokens
(``"mean"``).

The final linear layer LELP needs:

* **exact** (every class one single-token verbalizer, ``pooling="last"``): W = the LM head's rows of those tokens,
  b = its bias (or 0), and the teacher's logits are these raw scores W·h + b. They differ from the verbalizer
  log-probabilities by one constant per row (the log-normaliser over the whole vocabulary), so the class
  probabilities (a softmax over the classes) are the same, and the logits are exactly linear in h.
* **probed** (otherwise): the logits are the verbalizer log-probabilities themselves, which no layer of the LM
  reads linearly from h. The classifier is the least-squares probe from h to them on the training split (the rule
  the file teacher and ``--data.representation`` follow): the best linear read-out of the LM's scores, whose null
  space LELP projects onto; the cache records it as a probe (``exact_classifier`` is false) and checks its shapes
  only. The LM outputs (h, scores) are cached per split first (label-free, resumable, by the multi-process pass);
  the probe is fitted from the cached training split and the teacher's entries are copied from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lelp_lightning.cache import PassTarget, TeacherCache, build_entry, cache_key
from lelp_lightning.core import SPLITS, Source, SplitData, fingerprint_of, least_squares_probe
from lelp_lightning.errors import LelpError
from lelp_lightning.teachers.base import Teacher

POOLINGS = ("last", "mean")
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): autocast to bf16 pays only there (on an
    AVX2-only CPU it is several times slower than fp32, configs/teacher/mpnet_mlp.yaml)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


class PromptedLMTeacher(Teacher, name="prompted_lm",
                        description="A local causal language model, prompted: class scores are verbalizer "
                                    "log-probabilities."):
    """Any local Hugging Face causal-LM folder (``model``) prompted with ``template``; one verbalizer per class.

    ``verbalizers``: class name → the continuation that names it (``" positive"``), or a list of alternatives
    (logsumexp over them). A verbalizer is scored as the model sees it right after the prompt: the prompt and
    prompt + verbalizer are tokenised whole and the verbalizer's tokens are what follows the prompt's, so the
    leading space belongs to the verbalizer and the template should end without one (``"...Sentiment:"`` +
    ``" positive"``); a verbalizer that merges with the prompt's last token is refused. ``examples``: few-shot
    ``{text, label}`` rows rendered by ``example_template`` (``{text}``, ``{label}`` = the class name,
    ``{verbalizer}`` = its first verbalizer; default: the template itself, without ``{examples}``, followed by the
    verbalizer and a blank line) into ``{examples}``. ``normalize_by_length``: a multi-token verbalizer's score is
    the mean instead of the sum of its tokens' log-probabilities. ``max_length``: the text's tokens kept (it is cut
    at a token boundary; template and examples stay whole). ``precision``: ``bf16`` autocasts the model's body
    (the scores are computed in fp32 from its hidden states), ``auto`` picks it where the CPU has native bf16.
    """

    def __init__(self, model: str | None = None, template: str = "{examples}Text: {text}\nAnswer:",
                 verbalizers: dict[str, str | list[str]] | None = None, examples: list[dict[str, str]] | None = None,
                 example_template: str | None = None, normalize_by_length: bool = False, pooling: str = "last",
                 max_length: int = 256, batch_size: int = 16, precision: str = "auto"):
        if model is None:
            raise LelpError("PromptedLMTeacher needs 'model': a local Hugging Face causal-LM folder (config.json, "
                            "weights, tokenizer files).")
        if "{text}" not in template:
            raise LelpError(f"the prompt template {template!r} has no '{{text}}' placeholder; expected where each "
                            "text goes, e.g. 'Review: {text}\\nSentiment:'.")
        if not verbalizers:
            raise LelpError("PromptedLMTeacher needs 'verbalizers': one per class, class name → the words that name "
                            "it (e.g. {negative: ' negative', positive: ' positive'}).")
        self.verbalizers = {str(name): [v] if isinstance(v, str) else list(v) for name, v in verbalizers.items()}
        for name, words in self.verbalizers.items():
            if not words or any(not isinstance(w, str) or not w for w in words):
                raise LelpError(f"the verbalizer of class {name!r} is empty ({verbalizers[name]!r}); expected a "
                                "non-empty string or a list of them, e.g. ' positive'.")
        if pooling not in POOLINGS:
            raise LelpError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if precision not in PRECISIONS:
            raise LelpError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
        if max_length < 1 or batch_size < 1:
            raise LelpError(f"max_length and batch_size must be >= 1, got {max_length} and {batch_size}.")
        self.examples = [dict(e) for e in examples or []]
        for example in self.examples:
            if set(example) != {"text", "label"} or example["label"] not in self.verbalizers:
                raise LelpError(f"the few-shot example {example!r} needs exactly 'text' and 'label', the label one "
                                f"of the verbalizers' classes {list(self.verbalizers)}.")
        self.model = model
        self.template = template
        self.example_template = example_template
        self.normalize_by_length = normalize_by_length
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = ("bf16" if native_bf16() else "fp32") if precision == "auto" else precision
        self.class_names = list(self.verbalizers)
        self.prompt_prefix = self._render_examples()
        self._net = None
        self._probe: tuple[np.ndarray, np.ndarray] | None = None
        self._lm_outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split fingerprint → cached (h, scores)

    # -- prompts -------------------------------------------------------------------------------------------
    def _render_examples(self) -> str:
        shape = self.example_template or self.template.replace("{examples}", "") + "{verbalizer}\n\n"
        return "".join(shape.replace("{text}", e["text"]).replace("{label}", e["label"])
                       .replace("{verbalizer}", self.verbalizers[e["label"]][0]) for e in self.examples)

    def render(self, text: str) -> tuple[str, tuple[int, int]]:
        """The prompt of ``text`` and the characters the text occupies in it."""
        head, _, tail = self.template.replace("{examples}", self.prompt_prefix).partition("{text}")
        return head + text + tail.replace("{text}", text), (len(head), len(head) + len(text))

    def _truncated(self, texts: list[str]) -> list[str]:
        """``texts`` cut to their first ``max_length`` tokens (at a token's end)."""
        encoded = self._tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        return [text if len(offsets) <= self.max_length else text[: offsets[self.max_length - 1][1]]
                for text, offsets in zip(texts, encoded["offset_mapping"], strict=True)]

    def _encode_prompts(self, texts: list[str]) -> tuple[list[str], list[list[int]], list[list[bool]]]:
        """(prompts, their token ids after the tokenizer's leading special tokens, which tokens are the text's)."""
        prompts, spans = zip(*(self.render(t) for t in self._truncated(texts)), strict=True)
        encoded = self._tok(list(prompts), add_special_tokens=False, return_offsets_mapping=True)
        in_text = [[start < hi and end > lo for start, end in offsets]
                   for offsets, (lo, hi) in zip(encoded["offset_mapping"], spans, strict=True)]
        return list(prompts), [self._lead + ids for ids in encoded["input_ids"]], in_text

    def _continuations(self, prompts: list[str], prompt_ids: list[list[int]]) -> list[list[list[int]]]:
        """[alternative][row] → the verbalizer's token ids as they follow that row's prompt."""
        result = []
        for word in self._alternatives:
            whole = self._tok([p + word for p in prompts], add_special_tokens=False)["input_ids"]
            tails = []
            for prompt, ids, full in zip(prompts, prompt_ids, whole, strict=True):
                n = len(ids) - len(self._lead)
                if full[:n] != ids[len(self._lead):] or len(full) == n:
                    raise LelpError(f"the verbalizer {word!r} merges with the end of the prompt ...{prompt[-20:]!r} "
                                    "into other tokens; end the template without trailing whitespace and start "
                                    "each verbalizer with a space (e.g. 'Sentiment:' and ' positive').")
                tails.append(full[n:])
            result.append(tails)
        return result

    # -- the model -----------------------------------------------------------------------------------------
    def _load(self) -> nn.Module:
        if self._net is not None:
            return self._net
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(self.model).is_dir():
            raise LelpError(f"the language model folder {self.model!r} does not exist; expected a local Hugging Face "
                            "causal-LM folder (config.json, weights, tokenizer).")
        self._tok = AutoTokenizer.from_pretrained(self.model)
        bare = self._tok("x", add_special_tokens=False)["input_ids"]
        full = self._tok("x")["input_ids"]
        self._lead = next(full[:k] for k in range(len(full) + 1) if full[k: k + len(bare)] == bare)  # e.g. BOS
        net = AutoModelForCausalLM.from_pretrained(self.model, dtype=torch.float32).eval()
        self._head = net.get_output_embeddings()
        self._net = net
        self._order_verbalizers()
        self._check_head()
        return net

    def _order_verbalizers(self) -> None:
        """The alternatives in class order, and their tokens after a reference prompt (refused if they merge)."""
        self._alternatives = [w for name in self.class_names for w in self.verbalizers[name]]
        reference = self.render("x")[0]
        self._reference_ids = self._lead + self._tok(reference, add_special_tokens=False)["input_ids"]
        self._reference_tokens = [tails[0] for tails in self._continuations([reference], [self._reference_ids])]

    @torch.inference_mode()
    def _check_head(self) -> None:
        """Refuse a model whose output is not its LM head applied to its last hidden state (e.g. soft-capped
        logits): the teacher reads both and needs them to agree."""
        ids = torch.tensor([self._reference_ids])
        mine = nn.functional.linear(self._net.base_model(input_ids=ids).last_hidden_state[0, -1], self._head.weight,
                                    self._head.bias)
        if not torch.allclose(mine, self._net(input_ids=ids).logits[0, -1].float(), rtol=1e-4, atol=1e-4):
            raise LelpError(f"the language model in {self.model!r} does not compute its logits as its output layer "
                            "applied to its last hidden state (logit scaling or soft-capping?); PromptedLMTeacher "
                            "cannot read a linear final layer from it.")

    @property
    def exact(self) -> bool:
        """Whether the logits are exactly the LM head's rows applied to the embedding (see the module doc)."""
        self._load()
        return self.pooling == "last" and all(len(tokens) == 1 for tokens in self._reference_tokens) and \
            all(len(words) == 1 for words in self.verbalizers.values())

    def _forward(self, sequences: list[list[int]]) -> torch.Tensor:
        """The last layer's hidden states [B, L, D] of right-padded ``sequences`` (a row's positions do not
        depend on its padding: causal attention, positions counted from the row's start)."""
        net = self._load()
        device = next(net.parameters()).device  # the CPU, or the device a Lightning teacher pass put it on
        width = max(map(len, sequences))
        limit = getattr(net.config, "max_position_embeddings", None)
        if limit is not None and width > limit:
            raise LelpError(f"a prompt (with its verbalizer) has {width} tokens but the language model takes at most "
                            f"{limit}; lower the teacher's max_length or shorten the template and examples.")
        ids = torch.zeros((len(sequences), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = net.base_model(input_ids=ids.to(device), attention_mask=mask.to(device))
        return out.last_hidden_state.float()

    def _log_probs(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log p(token | hidden) per row: the LM head in fp32, the normaliser over the vocabulary in fp64 (so that
        how many threads sum it does not show in the fp32 result: one process or many give the same scores)."""
        logits = nn.functional.linear(hidden, self._head.weight.float(),
                                      None if self._head.bias is None else self._head.bias.float()).double()
        return logits.log_softmax(-1).gather(1, tokens.to(logits.device)[:, None])[:, 0]

    @torch.inference_mode()
    def lm_outputs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(embedding h [B, D], class scores [B, C]) of ``texts``: raw scores W·h + b when :attr:`exact`, else
        the verbalizer log-probabilities."""
        self._load()
        prompts, prompt_ids, in_text = self._encode_prompts(texts)
        hidden = self._forward(prompt_ids)
        last = torch.tensor([len(ids) - 1 for ids in prompt_ids], device=hidden.device)
        rows = torch.arange(len(texts), device=hidden.device)
        if self.pooling == "last":
            h = hidden[rows, last]
        else:  # over the text's tokens; a text without tokens (empty) takes the whole prompt
            mask = torch.zeros(hidden.shape[:2], device=hidden.device)
            for i, (flags, ids) in enumerate(zip(in_text, prompt_ids, strict=True)):
                mask[i, len(self._lead): len(ids)] = torch.tensor(flags, dtype=mask.dtype) if any(flags) else 1
            h = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        if self.exact:
            W, b = (torch.from_numpy(a).to(h.device) for a in self.classifier())
            return h.cpu().numpy(), (h @ W.T + b).cpu().numpy()
        scores = torch.empty((len(self._alternatives), len(texts)), dtype=torch.float64)
        tails = self._continuations(prompts, prompt_ids)
        for a, rows_tails in enumerate(tails):
            single = [i for i, t in enumerate(rows_tails) if len(t) == 1]
            if single:
                first = torch.tensor([rows_tails[i][0] for i in single])
                scores[a, single] = self._log_probs(hidden[single, last[single]], first).cpu()
            multi = [i for i, t in enumerate(rows_tails) if len(t) > 1]
            for lo in range(0, len(multi), self.batch_size):
                chunk = multi[lo: lo + self.batch_size]
                extended = self._forward([prompt_ids[i] + rows_tails[i][:-1] for i in chunk])
                positions = [(j, len(prompt_ids[i]) - 1 + k) for j, i in enumerate(chunk)
                             for k in range(len(rows_tails[i]))]
                picked = extended[[p[0] for p in positions], [p[1] for p in positions]]
                tokens = torch.tensor([tok for i in chunk for tok in rows_tails[i]])
                per_token = self._log_probs(picked, tokens).cpu()
                sums = torch.zeros(len(chunk), dtype=torch.float64).index_add_(
                    0, torch.tensor([p[0] for p in positions]), per_token)
                scores[a, chunk] = sums
        if self.normalize_by_length:
            scores /= torch.tensor([[len(t) for t in rows_tails] for rows_tails in tails], dtype=torch.float64)
        sizes = [len(self.verbalizers[name]) for name in self.class_names]
        per_class = torch.stack([group.logsumexp(0) for group in scores.split(sizes)], 1)
        return h.cpu().numpy(), per_class.float().numpy()

    # -- the teacher protocol ------------------------------------------------------------------------------
    def _bind(self, source: Source) -> None:
        """Order the verbalizers as ``source``'s classes, refusing a mismatch."""
        names = [str(n) for n in source.class_names]
        if sorted(names) != sorted(self.class_names):
            raise LelpError(f"the verbalizers name the classes {sorted(self.verbalizers)} but the data has the classes "
                            f"{names}; give exactly one verbalizer per class.")
        if names != self.class_names:
            self.class_names = names
            if self._net is not None:
                self._order_verbalizers()

    def fingerprint(self) -> str:
        path = Path(self.model)
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()) \
            if path.is_dir() else []
        return fingerprint_of("PromptedLMTeacher", {
            "model": str(path.resolve()), "files": hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16],
            "template": self.template, "verbalizers": self.verbalizers, "examples": self.examples,
            "example_template": self.example_template, "normalize_by_length": self.normalize_by_length,
            "pooling": self.pooling, "max_length": self.max_length, "precision": self.precision})

    def lm_key(self, source: Source, split: str) -> str:
        return "lm-" + cache_key(self.fingerprint(), source.fingerprint(), source.split(split).fingerprint())

    def pass_targets(self, source: Source, cache: TeacherCache) -> list[PassTarget]:
        """The probed teacher's LM outputs (h, verbalizer log-probabilities) of every split not cached yet: the
        expensive, label-free part, filled first by the pass; the exact teacher has none."""
        self._bind(source)
        if self.exact:
            return []
        return [self._lm_target(source, split) for split in SPLITS if not cache.exists(self.lm_key(source, split))]

    def _lm_target(self, source: Source, split: str) -> PassTarget:
        data = source.split(split)
        dim, classes = self._load().get_output_embeddings().in_features, len(self.class_names)
        return PassTarget(key=self.lm_key(source, split), labels=data.labels, row_ids=data.row_ids,
                          embedding_dim=dim, num_classes=classes,
                          meta={"lm": self.fingerprint(), "source": source.fingerprint(), "split": split},
                          order=self.row_order(data), block_size=self.batch_size,
                          encode=lambda index: self.lm_outputs([data.texts[i] for i in index]),
                          classifier=lambda: (np.zeros((classes, dim), np.float32), np.zeros(classes, np.float32)),
                          modules=self.modules(), desc=f"language model [{split}]")

    def fit(self, source: Source, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
        """Bind the classes; the probed teacher reads (or builds) its cached LM outputs and fits the least-squares
        probe on the training split's (label-free: every training row, whatever ``labeled``). Every process of a
        pass fits it from the same cached rows; rank 0's is the one the entries keep."""
        self._bind(source)
        if self.exact:
            return
        for split in SPLITS:
            key = self.lm_key(source, split)
            entry = cache.open(key) if cache.exists(key) else build_entry(cache, self._lm_target(source, split))
            self._lm_outputs[source.split(split).fingerprint()] = (entry.embedding, entry.logits)
        self._probe = least_squares_probe(*self._lm_outputs[source.split("train").fingerprint()])

    @property
    def exact_classifier(self) -> bool:
        """Whether :meth:`classifier` is the LM head's own rows (logits = W·h + b), not a fitted probe."""
        return self.exact

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.lm_outputs(list(texts))

    def encode_rows(self, split: SplitData, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cached = self._lm_outputs.get(split.fingerprint())
        if cached is not None and not self.exact:
            return np.asarray(cached[0][index], np.float32), np.asarray(cached[1][index], np.float32)
        return self.encode([split.texts[i] for i in index])

    def row_order(self, split: SplitData) -> np.ndarray:
        """Longest prompt first (stable), so a batch pads little."""
        self._load()
        lengths = [len(ids) for ids in self._encode_prompts(list(split.texts))[1]]
        return np.argsort(-np.asarray(lengths), kind="stable")

    def modules(self) -> list[nn.Module]:
        return [self._load()]

    def classifier(self) -> tuple[np.ndarray, np.ndarray]:
        self._load()
        if not self.exact:
            if self._probe is None:
                raise RuntimeError("PromptedLMTeacher.fit must run before a probed teacher's classifier (multi-token "
                                   "verbalizers, alternatives or mean pooling) is read.")
            return self._probe[0].copy(), self._probe[1].copy()
        ids = [tokens[0] for tokens in self._reference_tokens]  # exact: one single-token verbalizer per class
        W = self._head.weight[ids].detach().float().cpu().numpy().copy()
        b = np.zeros(len(ids), np.float32) if self._head.bias is None else \
            self._head.bias[ids].detach().float().cpu().numpy().copy()
        return W, b

    @property
    def pass_description(self) -> str:
        return f"running the language model {Path(self.model).name}"
