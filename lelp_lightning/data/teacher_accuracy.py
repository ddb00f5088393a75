"""α(x): the probability that the teacher's argmax is right at x, estimated on the labeled validation split.

SLaM mixes the student's output with weight α(x); weighted distillation weights each row by it. Both
need it for rows without labels, so it is a function of what the teacher alone provides: α is the
isotonic (non-decreasing) regression of the teacher's correctness (0/1) on its margin, the gap between its
two largest class probabilities, fitted on the validation split (open choice in METHODS.md; for two
classes any monotone margin, e.g. |f₁ − f₀|, gives the same fit).
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from lelp_lightning.errors import LelpError


def teacher_margin(logits: np.ndarray) -> np.ndarray:
    """p₍₁₎ − p₍₂₎ of softmax(logits) per row: 0 where the teacher hesitates, 1 where it is certain."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


class TeacherAccuracy:
    """Isotonic fit of the teacher's correctness against its margin: ``TeacherAccuracy(val_logits, val_labels)(logits)``."""

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
