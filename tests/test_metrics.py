"""Metrics against scikit-learn, with unparsed predictions (None) kept apart."""

import csv
import random

import numpy as np
import pytest
from sklearn import metrics as skm

from mental_edge.report.metrics import UNPARSED, accuracy, confusion_matrix, f1_scores, score

SENTINEL = "__unparsed__"


def _reference(gold, pred):
    """scikit-learn's figures, an unparsed answer being a class of its own that is never averaged."""
    y_pred = [SENTINEL if p is None else p for p in pred]
    labels = sorted(set(gold) | {p for p in pred if p is not None})
    return (
        skm.accuracy_score(gold, y_pred),
        skm.f1_score(gold, y_pred, labels=labels, average="weighted", zero_division=0),
        skm.f1_score(gold, y_pred, labels=labels, average="macro", zero_division=0),
    )


def _random_case(rng, n_labels, n, unparsed_rate):
    labels = [f"c{i}" for i in range(n_labels)]
    weights = [rng.random() + 0.05 for _ in labels]
    gold = rng.choices(labels, weights, k=n)
    pred = [None if rng.random() < unparsed_rate else g if rng.random() < 0.6 else rng.choice(labels) for g in gold]
    return labels, gold, pred


@pytest.mark.parametrize("seed", range(40))
def test_random_label_lists_match_sklearn(seed):
    rng = random.Random(seed)
    labels, gold, pred = _random_case(rng, rng.randint(2, 9), rng.randint(1, 300), rng.choice([0, 0.05, 0.3]))
    acc, weighted, macro = _reference(gold, pred)
    assert accuracy(gold, pred) == pytest.approx(acc, abs=1e-12)
    assert f1_scores(gold, pred) == pytest.approx((weighted, macro), abs=1e-12)
    # the task's full label order gives the same figures (absent classes are not averaged)
    assert f1_scores(gold, pred, labels) == pytest.approx((weighted, macro), abs=1e-12)
    s = score(gold, pred, labels)
    assert (s.accuracy, s.weighted_f1, s.macro_f1) == pytest.approx((acc, weighted, macro), abs=1e-12)
    assert s.unparsed == sum(p is None for p in pred) and s.n == len(gold)


@pytest.mark.parametrize("seed", range(10))
def test_confusion_matrix_matches_sklearn(seed):
    rng = random.Random(100 + seed)
    labels, gold, pred = _random_case(rng, rng.randint(2, 6), 200, 0.1)
    ours = confusion_matrix(gold, pred, labels)
    theirs = skm.confusion_matrix(gold, [SENTINEL if p is None else p for p in pred], labels=[*labels, SENTINEL])
    assert np.array_equal(ours, theirs[: len(labels)])  # the sentinel's row is empty: it is never gold
    assert ours[:, -1].sum() == sum(p is None for p in pred)


def _imhi_labels(imhi_dir, name, task):
    with open(imhi_dir / "test_instruction" / f"{name}.csv", newline="", encoding="utf-8") as f:
        return [task.parse_answer(row["gpt-3.5-turbo"], "instruction") for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", ["SAD", "CAMS", "t-sid", "DR"])
def test_real_label_lists_match_sklearn(imhi_dir, name):
    from mental_edge.prompting import load_tasks

    task = load_tasks().task(name)
    gold = _imhi_labels(imhi_dir, name, task)
    rng = random.Random(name)
    # a noisy "model": right 70% of the time, a random label or unparsed otherwise
    pred = [g if rng.random() < 0.7 else rng.choice([*task.labels, None]) for g in gold]
    s = score(gold, pred, task.labels)
    assert (s.accuracy, s.weighted_f1, s.macro_f1) == pytest.approx(_reference(gold, pred), abs=1e-12)
    assert s.labels == task.labels and sum(map(sum, s.confusion)) == len(gold)
    perfect = score(gold, gold, task.labels)
    assert perfect.accuracy == perfect.weighted_f1 == perfect.macro_f1 == 1.0


def test_unparsed_is_wrong_and_never_class_zero():
    gold = ["no", "no", "yes", "yes"]
    pred = ["no", None, "yes", None]
    s = score(gold, pred, ("no", "yes"))
    assert s.accuracy == 0.5 and s.unparsed == 2
    assert s.confusion == ((1, 0, 1), (0, 1, 1))
    assert s.as_dict()["confusion"]["columns"] == ["no", "yes", UNPARSED]
    # reading the unparsed answers as class 0 ("no") would have scored higher: that is what we refuse
    assert score(gold, ["no", "no", "yes", None], ("no", "yes")).accuracy == 0.75


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="not among"):
        score(["a"], ["z"], ("a", "b"))
    assert score([], [], ("a",)).accuracy == 0.0
