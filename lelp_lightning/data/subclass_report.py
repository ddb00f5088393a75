"""What the pseudo-subclasses are: per class, their sizes, their agreement with the source's fine labels (NMI,
purity) where it has them, and for text their most distinctive n-grams and a few example rows.

A row's pseudo-subclass is the argmax over its own class's S logits of z (the subclass it puts most mass on).
NMI is the mutual information of two labelings over the arithmetic mean of their entropies (scikit-learn's
default normalisation); purity is the share of rows whose pseudo-subclass's most common fine label is their own.
Distinctive n-grams: smoothed log-odds of a word uni/bigram inside the pseudo-subclass against the rest of its
class (English stop words dropped, n-grams seen fewer than ``min_count`` times in the subclass skipped).
"""

from __future__ import annotations

import numpy as np

from lelp_lightning.core import UNLABELED


def own_subclass(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's pseudo-subclass within its class: argmax over s of z[i, labels[i], s]."""
    return np.asarray(z)[np.arange(len(labels)), labels].argmax(-1)


def contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, a_idx = np.unique(a, return_inverse=True)
    _, b_idx = np.unique(b, return_inverse=True)
    table = np.zeros((a_idx.max(initial=-1) + 1, b_idx.max(initial=-1) + 1))
    np.add.at(table, (a_idx, b_idx), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information of two labelings, I(a; b) / ((H(a) + H(b)) / 2); 1 when both are constant."""
    table = contingency(a, b)
    if table.size == 0 or (table.shape[0] == 1 and table.shape[1] == 1):
        return 1.0
    n = table.sum()
    joint = table[table > 0] / n
    outer = np.outer(table.sum(1), table.sum(0))[table > 0] / n**2
    mi = float((joint * np.log(joint / outer)).sum())
    denominator = (_entropy(table.sum(1)) + _entropy(table.sum(0))) / 2
    return max(mi, 0.0) / denominator if denominator > 0 else 0.0


def purity(assigned: np.ndarray, fine: np.ndarray) -> float:
    """Share of rows whose pseudo-subclass's most common fine label is their own."""
    table = contingency(assigned, fine)
    return float(table.max(1).sum() / table.sum()) if table.size else 1.0


def distinctive_ngrams(texts: list[str], assigned: np.ndarray, num_subclasses: int, top: int = 8,
                       min_count: int = 3) -> list[list[str]]:
    """Per pseudo-subclass, its ``top`` uni/bigrams by smoothed log-odds against the other rows of the class."""
    from sklearn.feature_extraction.text import CountVectorizer

    try:
        counts = CountVectorizer(ngram_range=(1, 2), stop_words="english", min_df=2).fit(texts)
    except ValueError:  # no n-gram occurs twice: nothing distinctive to say
        return [[] for _ in range(num_subclasses)]
    matrix = counts.transform(texts).tocsc()
    vocab = counts.get_feature_names_out()
    out = []
    for s in range(num_subclasses):
        inside = np.asarray(matrix[assigned == s].sum(0)).ravel()
        outside = np.asarray(matrix[assigned != s].sum(0)).ravel()
        if inside.sum() == 0:
            out.append([])
            continue
        log_odds = np.log((inside + 0.5) / (inside.sum() + 0.5 * len(vocab))) \
            - np.log((outside + 0.5) / (outside.sum() + 0.5 * len(vocab)))
        log_odds[inside < min_count] = -np.inf
        best = [i for i in np.argsort(-log_odds, kind="stable")[:top] if np.isfinite(log_odds[i])]
        out.append([str(vocab[i]) for i in best])
    return out


def subclass_report(z: np.ndarray, labels: np.ndarray, fine: np.ndarray | None = None,
                    texts: list[str] | None = None, class_names: list[str] | None = None, examples: int = 3,
                    chars: int = 160) -> dict:
    """Per class: pseudo-subclass sizes; NMI and purity against ``fine`` (rows with a known fine label); for
    ``texts``, distinctive n-grams and the ``examples`` rows most firmly in each pseudo-subclass (largest
    margin of their z over the class's other subclasses), cut to ``chars`` characters."""
    z = np.asarray(z)
    labels = np.asarray(labels)
    C, S = z.shape[1], z.shape[2]
    assigned = own_subclass(z, labels)
    report = {}
    for c in range(C):
        rows = np.flatnonzero(labels == c)
        mine = assigned[rows]
        entry: dict = {"rows": int(len(rows)), "sizes": np.bincount(mine, minlength=S).tolist()}
        if fine is not None:
            class_fine = np.asarray(fine)[rows]
            known = class_fine != UNLABELED
            if known.any():
                entry["fine_labels"] = int(len(np.unique(class_fine[known])))
                entry["nmi"] = round(nmi(mine[known], class_fine[known]), 4)
                entry["purity"] = round(purity(mine[known], class_fine[known]), 4)
        if texts is not None and len(rows):
            class_texts = [texts[i] for i in rows]
            entry["ngrams"] = distinctive_ngrams(class_texts, mine, S)
            zc = z[rows, c]
            top_two = np.sort(zc, axis=1)[:, -2:] if S > 1 else np.concatenate([zc, zc], 1)
            margin = top_two[:, -1] - top_two[:, 0]
            entry["examples"] = [[class_texts[i][:chars] for i in np.flatnonzero(mine == s)[
                np.argsort(-margin[mine == s], kind="stable")[:examples]]] for s in range(S)]
        report[class_names[c] if class_names else str(c)] = entry
    return report
