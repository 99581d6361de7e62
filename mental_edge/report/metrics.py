"""Classification metrics with unparsed answers kept apart.

A prediction of None is an answer no rule could read. It counts as wrong for accuracy and recall, gets
its own column in the confusion matrix, and is never a class: F1 is averaged over the classes present
in the gold labels or the parsed predictions, as scikit-learn does by default (`average='weighted'`:
weights are gold support; `average='macro'`: plain mean; a class never predicted has F1 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNPARSED = "(unparsed)"


@dataclass(frozen=True)
class Scores:
    n: int
    accuracy: float
    weighted_f1: float
    macro_f1: float
    unparsed: int
    labels: tuple[str, ...]  # rows of the confusion matrix (gold), in this order
    confusion: tuple[tuple[int, ...], ...]  # columns: labels, then UNPARSED

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "weighted_f1": self.weighted_f1,
            "macro_f1": self.macro_f1,
            "unparsed": self.unparsed,
            "confusion": {
                "labels": list(self.labels),
                "columns": [*self.labels, UNPARSED],
                "matrix": [list(row) for row in self.confusion],
            },
        }


def accuracy(gold: Sequence[str], pred: Sequence[str | None]) -> float:
    _check_lengths(gold, pred)
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0


def confusion_matrix(gold, pred, labels: Sequence[str]) -> np.ndarray:
    """Counts[gold row, predicted column]; the last column holds unparsed predictions (None)."""
    _check_lengths(gold, pred)
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for g, p in zip(gold, pred):
        if g not in index or (p is not None and p not in index):
            raise ValueError(f"label {g if g not in index else p!r} is not among {list(labels)}")
        counts[index[g], len(labels) if p is None else index[p]] += 1
    return counts


def f1_per_class(counts: np.ndarray) -> np.ndarray:
    """F1 of each class (row/column i) from a confusion matrix with an unparsed last column."""
    true_pos = np.diag(counts[:, :-1]).astype(float)
    support = counts.sum(axis=1)  # gold occurrences, unparsed included (they are misses)
    predicted = counts[:, :-1].sum(axis=0)  # parsed predictions of each class
    denominator = support + predicted
    return np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)


def f1_scores(gold, pred, labels: Sequence[str] | None = None) -> tuple[float, float]:
    """(weighted F1, macro F1) over the classes present in gold or parsed predictions."""
    labels = present_labels(gold, pred, labels)
    counts = confusion_matrix(gold, pred, labels)
    f1 = f1_per_class(counts)
    support = counts.sum(axis=1)
    present = (support > 0) | (counts[:, :-1].sum(axis=0) > 0)
    if not present.any():
        return 0.0, 0.0
    weighted = float((f1 * support).sum() / support.sum()) if support.sum() else 0.0
    return weighted, float(f1[present].mean())


def present_labels(gold, pred, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """`labels` (a task's order) or, without it, the sorted classes seen in gold and parsed predictions."""
    seen = set(gold) | {p for p in pred if p is not None}
    if labels is None:
        return tuple(sorted(seen))
    unknown = seen - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among {list(labels)}")
    return tuple(labels)


def score(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] | None = None) -> Scores:
    """Every figure a report needs for one task. `labels` fixes the confusion matrix's order."""
    labels = present_labels(gold, pred, labels)
    counts = confusion_matrix(gold, pred, labels)
    weighted, macro = f1_scores(gold, pred, labels)
    return Scores(
        n=len(gold),
        accuracy=accuracy(gold, pred),
        weighted_f1=weighted,
        macro_f1=macro,
        unparsed=sum(p is None for p in pred),
        labels=labels,
        confusion=tuple(tuple(int(x) for x in row) for row in counts),
    )


def _check_lengths(gold, pred) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
