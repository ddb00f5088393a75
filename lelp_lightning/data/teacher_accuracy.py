"""How good the teacher is: α(x), the probability that its argmax is right at x (estimated on the labeled
validation split), the example weights built on it, and the teacher's reference metrics.

SLaM mixes the student's output with weight α(x); weighted distillation weights each row by it. Both
need it for rows without labels, so it is a function of what the teacher alone provides: α is the
isotonic (non-decreasing) regression of the teacher's correctness (0/1) on its margin, the gap between its
two largest class probabilities, fitted on the validation split (open choice, docs/methods.md; for two
classes any monotone margin, e.g. |f₁ − f₀|, gives the same fit).
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from lelp_lightning.core import UNLABELED
from lelp_lightning.errors import LelpError


def teacher_margin(logits: np.ndarray) -> np.ndarray:
    """p₍₁₎ − p₍₂₎ of softmax(logits) per row: 0 where the teacher hesitates, 1 where it is certain."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class TeacherAccuracy:
    """Isotonic fit of the teacher's correctness against its margin.

    ``TeacherAccuracy(val_logits, val_labels)(logits)``.
    """

    def __init__(self, logits: np.ndarray, labels: np.ndarray):
        labels = np.asarray(labels)
        if len(labels) == 0 or (labels < 0).any():
            raise LelpError("the teacher's accuracy is estimated on the validation split, which needs every "
                            "row labeled and at least one row.")
        correct = (np.asarray(logits).argmax(1) == labels).astype(np.float64)
        self.model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        self.model.fit(teacher_margin(logits), correct)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return self.model.predict(teacher_margin(logits)).astype(np.float32)


class TeacherQuality:
    """α(x) per split (the teacher's estimated accuracy at x) and weighted distillation's example weights
    w(x) = α(x) / mean of α over the training split; each computed once, from cache entries (``.logits``,
    ``.label``) with the validation split labeled."""

    def __init__(self, entries: dict):
        self.entries = entries
        self._accuracy: TeacherAccuracy | None = None
        self._alpha: dict[str, np.ndarray] = {}

    def accuracy(self, split: str) -> np.ndarray:
        if self._accuracy is None:
            val = self.entries["val"]
            self._accuracy = TeacherAccuracy(val.logits, val.label)
        if split not in self._alpha:
            self._alpha[split] = self._accuracy(self.entries[split].logits)
        return self._alpha[split]

    def weights(self, split: str) -> np.ndarray:
        mean = float(self.accuracy("train").mean())
        if mean <= 0:
            raise LelpError("the teacher is never right on the validation split, so every example weight is 0; "
                            "check the teacher and the labels.")
        return self.accuracy(split) / np.float32(mean)


def teacher_metrics(entry, train_labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """The teacher's accuracy and macro-F1 on a cache entry, and the rate of the training split's majority class
    there (hidden training labels left out)."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    logits = torch.from_numpy(np.array(entry.logits))  # copies: torch refuses read-only (memory-mapped) arrays
    target = torch.from_numpy(np.array(entry.label))
    train_labels = np.asarray(train_labels)
    majority = int(np.bincount(train_labels[train_labels != UNLABELED], minlength=num_classes).argmax())
    return {
        "teacher_accuracy": multiclass_accuracy(logits, target, num_classes, average="micro").item(),
        "teacher_macro_f1": multiclass_f1_score(logits, target, num_classes, average="macro").item(),
        "majority_class_rate": float((target == majority).float().mean()),
    }
