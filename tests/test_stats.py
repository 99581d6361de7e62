"""stats.py against an independent computation: scikit-learn's F1 on resamples drawn by numpy in the test,
ECE and Brier written out here (and Brier against scikit-learn's binary one), and the known cases."""

import random

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score

from mental_edge.report.stats import bootstrap, calibration, chosen_probability, paired_bootstrap

LABELS = ["none", "bias", "jobs", "medication"]


def reference_figures(gold, pred, labels):
    """sklearn's accuracy, weighted and macro F1; an unparsed answer (None) is a miss, never a class."""
    pred = ["(unparsed)" if p is None else p for p in pred]
    present = sorted(set(gold) | {p for p in pred if p != "(unparsed)"})
    present = [label for label in labels if label in present]
    return {
        "accuracy": accuracy_score(gold, pred),
        "weighted_f1": f1_score(gold, pred, labels=present, average="weighted", zero_division=0),
        "macro_f1": f1_score(gold, pred, labels=present, average="macro", zero_division=0),
    }


def reference_bootstrap(gold, preds, labels, resamples, seed):
    """The percentile intervals, resampling with numpy exactly as stats.py documents; `preds` are one run's
    predictions or two runs' (then the intervals are of the paired delta)."""
    n = len(gold)
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    samples = {k: [] for k in ("accuracy", "weighted_f1", "macro_f1")}
    for idx in indices:
        g = [gold[i] for i in idx]
        figures = [reference_figures(g, [p[i] for i in idx], labels) for p in preds]
        for key in samples:
            samples[key].append(figures[-1][key] - (figures[0][key] if len(preds) == 2 else 0.0))
    return {k: tuple(np.percentile(v, [2.5, 97.5])) for k, v in samples.items()}


def noisy_run(n, seed, unparsed=0.05):
    rng = random.Random(seed)
    gold = [rng.choice(LABELS) for _ in range(n)]
    pred = []
    for g in gold:
        roll = rng.random()
        pred.append(None if roll < unparsed else g if roll < 0.65 else rng.choice(LABELS))
    return gold, pred


def test_intervals_equal_sklearn_f1_on_the_same_numpy_resamples():
    gold, pred = noisy_run(120, seed=3)
    got = bootstrap(gold, pred, LABELS, resamples=200, seed=11)
    want = reference_bootstrap(gold, [pred], LABELS, resamples=200, seed=11)
    exact = reference_figures(gold, pred, LABELS)
    for key, interval in got.items():
        assert interval.estimate == pytest.approx(exact[key], abs=1e-12)
        assert (interval.low, interval.high) == pytest.approx(want[key], abs=1e-12)
        assert interval.low <= interval.estimate <= interval.high


def test_the_interval_narrows_as_rows_grow_and_five_rows_cannot_carry_a_figure():
    small = bootstrap(*noisy_run(5, seed=1), LABELS, resamples=500)
    large = bootstrap(*noisy_run(2000, seed=1), LABELS, resamples=500)
    width = {k: (v.high - v.low) for k, v in small.items()}
    assert width["accuracy"] >= 0.5  # 5 rows: the interval spans most of [0, 1]
    assert large["accuracy"].high - large["accuracy"].low < 0.06


def test_a_perfect_run_has_every_figure_and_interval_at_one():
    gold = ["yes", "no", "no", "yes", "no"] * 8
    for interval in bootstrap(gold, list(gold), resamples=300).values():
        assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)


def test_a_constant_run_gets_the_figures_of_its_one_label():
    gold = ["yes"] * 30 + ["no"] * 70
    got = bootstrap(gold, ["no"] * 100, ["yes", "no"], resamples=300, seed=2)
    # accuracy = share of "no"; F1(no) = 2*0.7/(1+0.7), F1(yes) = 0 (never predicted)
    assert got["accuracy"].estimate == pytest.approx(0.7)
    assert got["macro_f1"].estimate == pytest.approx((2 * 0.7 / 1.7) / 2)
    assert got["weighted_f1"].estimate == pytest.approx(0.7 * 2 * 0.7 / 1.7)
    want = reference_bootstrap(gold, [["no"] * 100], ["yes", "no"], resamples=300, seed=2)
    for key, interval in got.items():
        assert (interval.low, interval.high) == pytest.approx(want[key], abs=1e-12)


def test_a_run_compared_with_itself_has_zero_deltas_and_zero_width():
    gold, pred = noisy_run(80, seed=5)
    for interval in paired_bootstrap(gold, pred, list(pred), LABELS, resamples=300).values():
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_intervals_equal_the_delta_of_sklearn_figures_on_shared_resamples():
    gold, before = noisy_run(90, seed=7)
    _, after = noisy_run(90, seed=8)
    got = paired_bootstrap(gold, before, after, LABELS, resamples=150, seed=4)
    want = reference_bootstrap(gold, [before, after], LABELS, resamples=150, seed=4)
    a, b = reference_figures(gold, before, LABELS), reference_figures(gold, after, LABELS)
    for key, interval in got.items():
        assert interval.estimate == pytest.approx(b[key] - a[key], abs=1e-12)
        assert (interval.low, interval.high) == pytest.approx(want[key], abs=1e-12)


def probability_run(n, seed):
    rng = random.Random(seed)
    gold, pred, probs = [], [], []
    for _ in range(n):
        p_yes = rng.random()
        gold.append("yes" if rng.random() < p_yes**0.7 else "no")  # a little under-confident on "yes"
        pred.append(None if rng.random() < 0.05 else "yes" if p_yes >= 0.5 else "no")
        probs.append(None if pred[-1] is None else {"yes": p_yes, "no": 1 - p_yes})
    return gold, pred, probs


def test_ece_and_brier_equal_a_computation_written_out_here():
    gold, pred, probs = probability_run(500, seed=9)
    got = calibration(gold, pred, probs, bins=10)
    kept = [(g, p, q) for g, p, q in zip(gold, pred, probs) if p is not None]
    conf = np.array([q[p] for g, p, q in kept])
    correct = np.array([g == p for g, p, q in kept])
    ece = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        mask = (conf >= lo) & ((conf < hi) if b < 9 else (conf <= hi))
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    # two labels: the summed squared error over both is twice sklearn's binary Brier score
    binary = brier_score_loss([g == "yes" for g, _, _ in kept], [q["yes"] for _, _, q in kept])
    assert got["rows"] == len(kept) and got["without_probabilities"] == len(gold) - len(kept)
    assert got["ece"] == pytest.approx(ece, abs=1e-12)
    assert got["brier"] == pytest.approx(2 * binary, abs=1e-12)
    assert sum(b["rows"] for b in got["reliability"]) == len(kept)


def test_a_certain_and_right_model_is_perfectly_calibrated():
    gold = ["yes", "no"] * 10
    got = calibration(gold, gold, [{g: 1.0, "yes" if g == "no" else "no": 0.0} for g in gold])
    assert (got["ece"], got["brier"]) == (0.0, 0.0)


def test_rows_without_probabilities_give_no_figures_rather_than_a_crash():
    got = calibration(["yes", "no"], [None, "no"], [None, None])
    assert (got["ece"], got["brier"], got["rows"], got["without_probabilities"]) == (None, None, 0, 2)
    assert chosen_probability("maybe", {"yes": 0.5}) is None
