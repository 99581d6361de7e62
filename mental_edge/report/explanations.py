"""Explanation scores summarised: per task each metric's figure with a 95% bootstrap interval, and two runs'
paired deltas. The per-row scores come from `mental_edge.scoring`; this module only aggregates them.

Per row: `bart_score` (BARTScore, the mean log-likelihood per token of the reference given the explanation: higher
is better, 0 is the top), `rouge1`, `rouge2`, `rougeL` (F-measures, 0 to 1, as the `rouge-score` package gives them)
and `bleu` (sentence BLEU, 0 to 100, as sacrebleu's `sentence_bleu`), with `bleu_stats`, the row's BLEU counts
(hypothesis length, reference length, matched and total 1- to 4-grams). Per task the figure of a metric is the mean
over rows, except BLEU: corpus BLEU over the task's rows (sacrebleu's `corpus_bleu` of the same pairs), as the
benchmark reports it. Intervals resample rows (stats.resampled_sums: the same rows in both runs when paired).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from mental_edge.report.stats import LEVEL, RESAMPLES, SEED, interval, resampled_sums

MEAN_METRICS = ("bart_score", "rouge1", "rouge2", "rougeL")
METRICS = (*MEAN_METRICS, "bleu")
NAMES = {"bart_score": "BARTScore", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU"}
ORDER = 4  # BLEU's n-gram orders
STATS = 2 + 2 * ORDER  # hyp length, ref length, matched[4], total[4]


def bleu_from_stats(stats: np.ndarray, *, effective_order: bool = False) -> np.ndarray:
    """sacrebleu's BLEU (exp smoothing) from summed counts, for any leading shape (..., STATS)."""
    stats = np.asarray(stats, dtype=float)
    sys_len, ref_len = stats[..., 0], stats[..., 1]
    correct, total = stats[..., 2 : 2 + ORDER], stats[..., 2 + ORDER :]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
        halvings = np.cumsum(correct == 0, axis=-1)  # sacrebleu doubles its divisor at each order with no match
        precision = np.where(correct > 0, 100 * correct / total, 100 / (2.0**halvings * total))
        present = total > 0
        logs = np.where(present, np.log(np.where(present, precision, 1.0)), 0.0)
        orders = present.sum(axis=-1) if effective_order else np.full(sys_len.shape, ORDER)
        full = present.all(axis=-1) if not effective_order else orders > 0
        score = bp * np.exp(logs.sum(axis=-1) / np.maximum(orders, 1))
    return np.where(full & (correct.sum(axis=-1) > 0), score, 0.0)


def summarize(rows: Sequence[Mapping], *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Each metric's figure over the rows with its interval (a dict per metric), the row count and the
    bootstrap settings. BARTScore is left out where the rows have none (a run scored without a scorer)."""
    out: dict = {"rows": len(rows)}
    for name in _present(rows):
        values = _values(rows, name)
        if name == "bleu":
            samples = bleu_from_stats(resampled_sums(values, resamples=resamples, seed=seed))
            estimate = float(bleu_from_stats(values.sum(axis=0)))
        else:
            samples = resampled_sums(values, resamples=resamples, seed=seed)[:, 0] / max(len(rows), 1)
            estimate = float(values.mean()) if len(rows) else math.nan
        out[name] = interval(estimate, samples).as_dict()
    return {**out, "level": LEVEL, "resamples": resamples, "seed": seed}


def paired(
    before: Sequence[Mapping], after: Sequence[Mapping], *, resamples: int = RESAMPLES, seed: int = SEED
) -> dict | None:
    """Deltas (after minus before) of each metric over the rows (by id) both runs scored, with paired intervals."""
    after_by_id = {str(r["id"]): r for r in after}
    matched = [(r, after_by_id[str(r["id"])]) for r in before if str(r["id"]) in after_by_id]
    if not matched:
        return None
    a_rows, b_rows = [a for a, _ in matched], [b for _, b in matched]
    out: dict = {"rows": len(matched)}
    for name in [m for m in _present(a_rows) if m in _present(b_rows)]:
        a, b = _values(a_rows, name), _values(b_rows, name)
        if name == "bleu":
            delta = bleu_from_stats(b.sum(axis=0)) - bleu_from_stats(a.sum(axis=0))
            samples = bleu_from_stats(resampled_sums(b, resamples=resamples, seed=seed)) - bleu_from_stats(
                resampled_sums(a, resamples=resamples, seed=seed)
            )
        else:
            delta = b.mean() - a.mean()
            samples = resampled_sums(b - a, resamples=resamples, seed=seed)[:, 0] / len(matched)
        out[name] = interval(float(delta), samples).as_dict()
    return {**out, "level": LEVEL, "resamples": resamples, "seed": seed}


def _present(rows: Sequence[Mapping]) -> list[str]:
    if not rows:
        return []
    return [m for m in METRICS if all(r.get("bleu_stats" if m == "bleu" else m) is not None for r in rows)]


def _values(rows: Sequence[Mapping], name: str) -> np.ndarray:
    if name == "bleu":
        return np.array([r["bleu_stats"] for r in rows], dtype=float).reshape(len(rows), STATS)
    return np.array([[float(r[name])] for r in rows]).reshape(len(rows), 1)
