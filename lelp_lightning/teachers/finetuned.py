"""A teacher fine-tuned end to end by the framework: a pretrained encoder becomes a Hugging Face sequence classifier.

The paper's teachers are of this kind (ALBERT, ResNet trained on the task), not a small head over frozen features.
:meth:`FineTunedClassifierTeacher.fit` fine-tunes ``base`` on the labeled training rows once; the checkpoint is
cached beside the teacher cache (keyed by the teacher, the data and the labeled rows), and from then on the
teacher is :class:`HFSequenceClassifierTeacher` on that checkpoint. An interrupted fine-tuning resumes from its
last finished epoch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from lelp_lightning.cache import TeacherCache, cache_key
from lelp_lightning.checkpoints import load_checkpoint
from lelp_lightning.core import Source, fingerprint_of, rows_fingerprint
from lelp_lightning.encoders import SentenceEncoder, resolve_model_path
from lelp_lightning.errors import LelpError
from lelp_lightning.teachers.hf_classifier import HFSequenceClassifierTeacher

log = logging.getLogger(__name__)


class FineTunedClassifierTeacher(HFSequenceClassifierTeacher, name="finetuned",
                                 description="A Hugging Face encoder fine-tuned as a sequence classifier on the "
                                             "training split."):
    """``base`` (a local folder or a bundled encoder name) fine-tuned as a sequence classifier on the task.

    AdamW (``lr``, ``weight_decay``), linear warm-up over the first ``warmup`` share of the steps then linear
    decay, ``epochs`` passes in batches of ``train_batch_size``; initialisation of the new classifier layer and
    batch order follow ``seed``. ``threads`` sets torch's CPU threads while it trains (``None``: torch's default).
    """

    def __init__(self, base: str = "all-MiniLM-L6-v2", epochs: int = 2, lr: float = 5e-5, weight_decay: float = 0.01,
                 warmup: float = 0.1, train_batch_size: int = 16, max_length: int = 128, batch_size: int = 32,
                 representation_layer: int = -1, threads: int | None = None, seed: int = 0):
        if epochs < 1 or train_batch_size < 1 or not 0 <= warmup < 1:
            raise LelpError(f"FineTunedClassifierTeacher needs epochs >= 1, train_batch_size >= 1 and 0 <= warmup < 1, "
                            f"got epochs={epochs}, train_batch_size={train_batch_size}, warmup={warmup}.")
        super().__init__(model=str(resolve_model_path(base)), tokenizer=str(resolve_model_path(base)),
                         max_length=max_length, batch_size=batch_size, representation_layer=representation_layer,
                         seed=seed)
        self.base = base
        self.epochs, self.lr, self.weight_decay, self.warmup = epochs, lr, weight_decay, warmup
        self.train_batch_size = train_batch_size
        self.threads = threads
        self._checkpoint: Path | None = None

    def fingerprint(self) -> str:
        """The base weights and every option that changes the fine-tuned model (not its location on disk)."""
        return fingerprint_of("FineTunedClassifierTeacher", {
            "base": SentenceEncoder(self.base).fingerprint(), "epochs": self.epochs, "lr": self.lr,
            "weight_decay": self.weight_decay, "warmup": self.warmup, "train_batch_size": self.train_batch_size,
            "max_length": self.max_length, "seed": self.seed})

    def fit(self, source: Source, cache: TeacherCache, labeled: np.ndarray | None = None) -> None:
        """Fine-tune on the training rows in ``labeled`` (default: all), or load the checkpoint a run saved."""
        subset = [] if labeled is None else ["labeled-" + rows_fingerprint(labeled)]
        folder = cache.root / f"finetuned-{cache_key(self.fingerprint(), source.fingerprint(), *subset)}"
        if not (folder / "config.json").is_file():
            train = source.split("train")
            rows = np.arange(len(train)) if labeled is None else np.asarray(labeled)
            self._fine_tune([train.texts[i] for i in rows], np.asarray(train.labels)[rows], source.num_classes, folder)
        self.model, self._net, self._checkpoint = str(folder), None, folder

    def _require_fitted(self) -> None:
        if self._checkpoint is None:
            raise RuntimeError("FineTunedClassifierTeacher.fit must run before the teacher is used.")

    def _load(self):
        self._require_fitted()
        return super()._load()

    def _fine_tune(self, texts: list[str], labels: np.ndarray, num_classes: int, folder: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
        from transformers.utils import logging as hf_logging

        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the new classifier layer's "newly initialized" notice is expected
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            net = AutoModelForSequenceClassification.from_pretrained(self.base_path, num_labels=num_classes)
        hf_logging.set_verbosity(verbosity)
        steps_per_epoch = -(-len(texts) // self.train_batch_size)
        optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.warmup * steps_per_epoch * self.epochs),
                                                   steps_per_epoch * self.epochs)
        partial = folder.with_name(folder.name + ".partial")
        done = 0
        if (partial / "state.pt").is_file():  # an interrupted fine-tuning: continue after its last finished epoch
            state = load_checkpoint(partial / "state.pt", "the resume state an interrupted fine-tuning wrote; "
                                    f"delete {partial} to start the fine-tuning again")
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            done = state["epochs_done"]
            log.info("resuming the fine-tuning of %s after epoch %d/%d", self.base, done, self.epochs)
        threads = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        y = torch.as_tensor(labels, dtype=torch.long)
        start = time.perf_counter()
        net.train()
        try:
            for epoch in range(done, self.epochs):
                order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
                torch.manual_seed(self.seed * 1000 + epoch)  # dropout
                for lo in range(0, len(texts), self.train_batch_size):
                    idx = order[lo: lo + self.train_batch_size]
                    batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
                    loss = torch.nn.functional.cross_entropy(net(**batch).logits, y[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    optimizer.step()
                    schedule.step()
                partial.mkdir(parents=True, exist_ok=True)
                tmp = partial / "state.pt.tmp"
                torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "epochs_done": epoch + 1}, tmp)
                os.replace(tmp, partial / "state.pt")
                log.info("fine-tuning %s: epoch %d/%d on %d rows, last batch loss %.4f (%.0f s)", self.base, epoch + 1,
                         self.epochs, len(texts), loss.item(), time.perf_counter() - start)
        finally:
            torch.set_num_threads(threads)
        net.eval()
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        net.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)  # the checkpoint appears complete or not at all
        shutil.rmtree(partial, ignore_errors=True)

    @property
    def base_path(self) -> str:
        return str(resolve_model_path(self.base))
