"""Uncertainty and calibration of a run's figures: bootstrap intervals, paired deltas, ECE and Brier score.

Five rows per task cannot carry an accuracy of 0.2000; an interval says so. The figures are those of
`metrics` (accuracy, weighted F1, macro F1 with unparsed answers kept apart), computed here for many resamples
at once from confusion counts so that 50,000 rows and 1,000 resamples take about a second.

Resampling is defined so that a test (or a reader) can repeat it with plain numpy:
`np.random.default_rng(seed).integers(0, n, size=(resamples, n))` row by row gives each resample's row
indices (drawn here in blocks, which takes the same numbers from the generator); an interval is the
2.5th and 97.5th percentile (`np.percentile`, linear) of the resampled figure. A paired interval applies the
same indices to both runs, so a run compared with itself has a delta of exactly zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mental_edge.report.metrics import present_labels, score

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
BINS = 10
METRICS = ("accuracy", "weighted_f1", "macro_f1")
_BLOCK_CELLS = 4_000_000  # indices drawn at once: bounds memory whatever the row count


@dataclass(frozen=True)
class Interval:
    estimate: float  # the figure on the rows as they are
    low: float
    high: float

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def bootstrap(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: Sequence[str] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Interval]:
    """95% percentile intervals of accuracy, weighted F1 and macro F1 (see the module docstring)."""
    labels = present_labels(gold, pred, labels)
    codes = _codes(gold, pred, labels)
    figures = _figures(_resampled_counts(codes, len(labels), len(gold), resamples, seed), len(labels))
    exact = score(gold, pred, labels)
    return {name: _interval(getattr(exact, name), figures[name]) for name in METRICS}


def paired_bootstrap(
    gold: Sequence[str],
    pred_before: Sequence[str | None],
    pred_after: Sequence[str | None],
    labels: Sequence[str] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Interval]:
    """Intervals of each figure's delta (after minus before) over the same resampled rows."""
    labels = present_labels(gold, [*pred_before, *pred_after], labels)
    n, k = len(gold), len(labels)
    before = _figures(_resampled_counts(_codes(gold, pred_before, labels), k, n, resamples, seed), k)
    after = _figures(_resampled_counts(_codes(gold, pred_after, labels), k, n, resamples, seed), k)
    exact_before, exact_after = score(gold, pred_before, labels), score(gold, pred_after, labels)
    return {
        name: _interval(getattr(exact_after, name) - getattr(exact_before, name), after[name] - before[name])
        for name in METRICS
    }


def resampled_sums(values: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Column sums of `values` (rows x columns) over each resample's rows: shape (resamples, columns). The rows
    are drawn as the module docstring says, so two calls with one seed resample the same rows (paired)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    out = np.zeros((resamples, values.shape[1]))
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].sum(axis=1)
    return out


def interval(estimate: float, samples: np.ndarray) -> Interval:
    """The estimate with the percentile interval of its resampled values."""
    return _interval(estimate, samples)


def chosen_probability(label: str | None, probabilities: Mapping[str, float] | None) -> float | None:
    """The probability the model gave its own label (None for an unparsed answer or a free answer)."""
    if label is None or not probabilities or label not in probabilities:
        return None
    return float(probabilities[label])


def calibration(
    gold: Sequence[str],
    pred: Sequence[str | None],
    probabilities: Sequence[Mapping[str, float] | None],
    bins: int = BINS,
) -> dict:
    """Reliability of the label probabilities, over the rows that have them.

    ECE: the chosen label's probability in `bins` equal-width bins over [0, 1] (the last one closed),
    sum over bins of (rows in bin / rows) * |accuracy in bin - mean probability in bin|.
    Brier score: mean over rows of sum over the task's labels of (p(label) - [label is gold])^2, a label
    missing from a row's probabilities counting as 0 (range 0 to 2; 0 is a perfect, certain model).
    """
    kept = [
        (g, p, probs, chosen_probability(p, probs))
        for g, p, probs in zip(gold, pred, probabilities)
        if chosen_probability(p, probs) is not None
    ]
    result = {"rows": len(kept), "without_probabilities": len(gold) - len(kept), "bins": bins}
    if not kept:
        return {**result, "ece": None, "brier": None, "reliability": []}
    confidence = np.array([c for *_, c in kept])
    correct = np.array([g == p for g, p, *_ in kept], dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    reliability, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
            ece += mask.sum() / len(kept) * abs(acc - conf)
            reliability.append({"low": float(edges[b]), "high": float(edges[b + 1]), "rows": int(mask.sum()),
                                "confidence": conf, "accuracy": acc})  # fmt: skip
    brier = float(np.mean([_brier_row(g, probs) for g, _, probs, _ in kept]))
    return {**result, "ece": float(ece), "brier": brier, "reliability": reliability}


def _brier_row(gold: str, probabilities: Mapping[str, float]) -> float:
    labels = set(probabilities) | {gold}
    return sum((float(probabilities.get(label, 0.0)) - (label == gold)) ** 2 for label in labels)


def _codes(gold, pred, labels) -> np.ndarray:
    """Each row's cell in a flattened k x (k+1) confusion matrix (the last column: unparsed)."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    return np.array([index[g] * (k + 1) + (k if p is None else index[p]) for g, p in zip(gold, pred)], dtype=np.int64)


def _resampled_counts(codes: np.ndarray, k: int, n: int, resamples: int, seed: int) -> np.ndarray:
    """Confusion counts of each resample: shape (resamples, k, k+1)."""
    cells = k * (k + 1)
    out = np.zeros((resamples, cells), dtype=np.int64)
    if n == 0:
        return out.reshape(resamples, k, k + 1)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        drawn = codes[rng.integers(0, n, size=(stop - start, n))]
        offsets = (np.arange(stop - start) * cells)[:, None]
        out[start:stop] = np.bincount((drawn + offsets).ravel(), minlength=(stop - start) * cells).reshape(-1, cells)
    return out.reshape(resamples, k, k + 1)


def _figures(counts: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """metrics.score's three figures for each resample's confusion counts, vectorised."""
    parsed = counts[:, :, :k]
    true_pos = np.diagonal(parsed, axis1=1, axis2=2).astype(float)
    support = counts.sum(axis=2).astype(float)
    predicted = parsed.sum(axis=1).astype(float)
    n = support.sum(axis=1)
    denominator = support + predicted
    f1 = np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
    present = denominator > 0
    safe_n = np.where(n > 0, n, 1)
    present_count = present.sum(axis=1)
    return {
        "accuracy": np.where(n > 0, true_pos.sum(axis=1) / safe_n, 0.0),
        "weighted_f1": np.where(n > 0, (f1 * support).sum(axis=1) / safe_n, 0.0),
        "macro_f1": np.where(present_count > 0, f1.sum(axis=1) / np.where(present_count > 0, present_count, 1), 0.0),
    }


def _interval(estimate: float, samples: np.ndarray) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))
