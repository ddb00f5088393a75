"""DistillModule: the student side (student network, objectives, optimiser, metrics)."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lelp_lightning.distributed import shard_modules
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import STAGES, Objective, class_logits
from lelp_lightning.objectives.cross_entropy import SubclassCrossEntropy
from lelp_lightning.students.networks import Student


def check_optimiser_options(lr: float, weight_decay: float) -> None:
    """Refuse a learning rate or weight decay that cannot train (the CLI calls this before any data work)."""
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise LelpError(f"model.lr (the learning rate) must be a finite number > 0, got {lr}.")
    if not (isinstance(weight_decay, numbers.Real) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise LelpError(f"model.weight_decay must be a finite number >= 0, got {weight_decay}.")


class DistillModule(LightningModule):
    """Trains ``student`` (with a C·S head) on the weighted sum of ``objectives``.

    Class predictions are ``logsumexp`` over each class's S logits. ``num_classes`` and
    ``num_subclasses`` are linked from the data module by the CLI.
    """

    def __init__(self, student: Student, objectives: list[Objective] | None = None, num_classes: int = 2,
                 num_subclasses: int = 1, lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__()
        check_optimiser_options(lr, weight_decay)
        self.save_hyperparameters(ignore=["student", "objectives"])
        if student.num_outputs != num_classes * num_subclasses:
            raise LelpError(f"the student head has {student.num_outputs} outputs but the data needs C·S = "
                            f"{num_classes}·{num_subclasses} = {num_classes * num_subclasses}.")
        self.student = student
        self.objectives = torch.nn.ModuleList(objectives or [SubclassCrossEntropy()])
        self.num_classes, self.num_subclasses = num_classes, num_subclasses
        self.lr, self.weight_decay = lr, weight_decay
        metrics = MetricCollection({
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        })
        # a student with sparse gradients trains with two optimisers (lazy Adam + AdamW), which Lightning steps
        # only under manual optimisation; a dense student keeps Lightning's automatic loop and one AdamW
        self.automatic_optimization = not student.sparse_parameters()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @property
    def batch_keys(self) -> set[str]:
        """The batch keys this model's objectives read beyond the defaults; the data module serves them."""
        return {key for objective in self.objectives for key in objective.requires}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        teacher = datamodule.teacher_statistics() if hasattr(datamodule, "teacher_statistics") else None
        if stage == "fit" and hasattr(datamodule, "featurizer"):
            self.student.start_from(datamodule.featurizer)  # a resumed fit's checkpoint then restores over it
        for objective in self.objectives:  # before the optimiser exists, so parameters built here train
            objective.setup(self.student, teacher)

    def configure_model(self) -> None:
        """Under FSDP2 (``ModelParallelStrategy``): shard the student and any objective with parameters.

        A no-op on one device and under DDP (no device mesh); runs before the optimiser is built.
        """
        if self.device_mesh is not None:
            if self.student.sparse_parameters():
                raise LelpError(f"FSDP cannot shard the sparse embedding table of {type(self.student).__name__}; "
                                "set model.student.init_args.sparse: false, or train it with DDP.")
            shard_modules([self.student, *self.objectives], self.device_mesh)

    def forward(self, inputs) -> torch.Tensor:
        return self.student(inputs)

    def class_logits(self, inputs) -> torch.Tensor:
        return class_logits(self(inputs), self.num_classes)

    def active_objectives(self, epoch: int) -> list[Objective]:
        """The terms that train in ``epoch``: those whose stage is ``'alone'`` if any, else those ``'on'``."""
        stages = [objective.stage(epoch) for objective in self.objectives]
        for objective, stage in zip(self.objectives, stages, strict=True):
            if stage not in STAGES:
                raise LelpError(f"{type(objective).__name__}.stage returned {stage!r}; expected one of {STAGES}.")
        wanted = "alone" if "alone" in stages else "on"
        active = [objective for objective, stage in zip(self.objectives, stages, strict=True) if stage == wanted]
        if not active:
            raise LelpError(f"no objective trains in epoch {epoch}; add a term that is on after the others stop "
                            "(e.g. kd after embedding_matching's hint_epochs).")
        return active

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        active = self.active_objectives(self.current_epoch)
        if any("student_embedding" in objective.requires for objective in active):
            embedding = self.student.embed(batch["inputs"])
            logits = self.student.head(embedding)
            batch = {**batch, "student_embedding": embedding}
        else:
            logits = self(batch["inputs"])
        batch_size = batch["label"].shape[0]
        log = self._logs_this_step()
        total = logits.new_zeros(())
        for objective in active:
            term = objective(logits, batch)
            if log:
                self.log(f"train/{objective.log_name}", term, batch_size=batch_size)
            total = total + objective.weight * term
        if log:
            self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        if not self.automatic_optimization:
            self._manual_step(total)
        return total

    def _logs_this_step(self) -> bool:
        """Whether Lightning hands this step's values to the loggers (every ``trainer.log_every_n_steps``). The
        per-step terms are logged on those steps only: one ``self.log`` costs about as much as a sparse step."""
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        return trainer._logger_connector.should_update_logs  # Lightning's own test, read before its step ends

    def _manual_step(self, loss: torch.Tensor) -> None:
        """One update with every optimiser. Only the first steps through Lightning's wrapper, which counts
        ``global_step``: a step is one batch, as with a dense student."""
        first, *others = self.optimizers()
        for optimizer in (first, *others):
            optimizer.zero_grad()
        self.manual_backward(loss)
        first.step()
        for optimizer in others:
            optimizer.optimizer.step()

    def on_fit_start(self) -> None:
        """Refuse a sparse student where its sparse gradients cannot be all-reduced (NCCL)."""
        if (self.student.sparse_parameters() and torch.distributed.is_available()
                and torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"):
            raise LelpError(f"NCCL cannot all-reduce the sparse gradients of {type(self.student).__name__}'s table; "
                            "set model.student.init_args.sparse: false, or use the gloo backend "
                            "(--trainer.strategy.process_group_backend gloo).")

    def _evaluate(self, batch: dict, metrics: MetricCollection) -> torch.Tensor:
        logits = self.class_logits(batch["inputs"])
        metrics.update(logits, batch["label"])
        self.log_dict(metrics, batch_size=batch["label"].shape[0], prog_bar=metrics is self.val_metrics)
        return logits

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_test_epoch_start(self) -> None:
        self._test_predicted = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predicted = self._evaluate(batch, self.test_metrics).argmax(-1)
        self._test_predicted += torch.bincount(predicted, minlength=self.num_classes)

    def on_test_epoch_end(self) -> None:
        """How many test rows the student gave each class (over every process): the run's summary warns when
        it gave them all one class."""
        counts = self.trainer.strategy.reduce(self._test_predicted, reduce_op="sum")
        self.test_prediction_counts = [int(n) for n in counts.tolist()]

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self.class_logits(batch["inputs"]), dim=-1)
        return {"row_id": batch["row_id"], "prediction": probs.argmax(-1), "probabilities": probs}

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Reseed torch from (global seed, epoch, batch): dropout and any other torch randomness of a step is then
        the same whether the run went straight through or was resumed from a checkpoint (which holds no RNG
        state, and a resumed loop draws from the RNG in another order before its first batch)."""
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None:
            state = int(np.random.SeedSequence([int(seed), self.current_epoch, batch_idx]).generate_state(1)[0])
            # not torch.manual_seed, which records a stack trace for every lazy device (~0.5 ms a step on CPU)
            torch.default_generator.manual_seed(state)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.manual_seed_all(state)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose head was trained for another C or S (instead of a size-mismatch traceback)."""
        saved = checkpoint.get("hyper_parameters", {})
        C, S = saved.get("num_classes", self.num_classes), saved.get("num_subclasses", self.num_subclasses)
        if (self.num_classes, self.num_subclasses) != (C, S):
            raise LelpError(f"the checkpoint's student head has C·S = {C}·{S} = {C * S} outputs but this run needs "
                            f"C·S = {self.num_classes}·{self.num_subclasses} = "
                            f"{self.num_classes * self.num_subclasses}; "
                            "use the run's own config (--config <run>/config.yaml) or the checkpoint's num_subclasses.")

    def configure_optimizers(self):
        """AdamW over every dense parameter, in the student's parameter groups (its own learning rates, if any) and
        one group of the objectives' parameters at the model's lr; with a sparse student also the student's optimiser
        of its sparse table (lazy Adam, ``SparseAdam``'s rule, by default; no weight decay). Both states are in the
        checkpoint, so a resumed run continues exactly."""
        sparse = self.student.sparse_parameters()
        groups = [dict(group) for group in self.student.dense_parameter_groups(self.lr)]
        grouped = {id(p) for group in groups for p in group["params"]} | {id(p) for p in sparse}
        others = [p for p in self.parameters() if id(p) not in grouped]
        if len(groups) == 1 and "lr" not in groups[0]:  # one group at the model's lr, as before parameter groups
            groups[0]["params"] = [*groups[0]["params"], *others]
        elif others:
            groups.append({"params": others})
        adamw = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        return [adamw, self.student.sparse_optimizer(self.lr)] if sparse else adamw
