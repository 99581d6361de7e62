"""ROUGE and BLEU of explanations equal the `rouge-score` and `sacrebleu` packages' figures on real IMHI text."""

import csv

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from mental_edge.report.explanations import bleu_from_stats, paired, summarize
from mental_edge.scoring.overlap import overlap_scores


@pytest.fixture(scope="module")
def pairs(imhi_dir):
    """Gold explanations of one task against those of the next rows and of another form of the same rows (the
    completion file's golds), with edge cases: empty, one word, no overlap, HTML entities, numbers."""
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fh:
        golds = [r["gpt-3.5-turbo"] for r in list(csv.DictReader(fh))[:40]]
    refs = [g.split("Reasoning:", 1)[-1].strip() for g in golds]
    cands = refs[1:] + refs[:1]
    cands[3] = golds[3]  # the label sentence and the explanation: a close, longer candidate
    extra = [("", "some reference"), ("yes", "yes"), ("a b", "c d"), ("it's 3.5 &amp; 10-20, ok.", "it's 3.5 & 10-20")]
    return [*zip(cands, refs), *extra]


def test_rouge_equals_rouge_score(pairs):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for cand, ref in pairs:
        want = scorer.score(ref, cand)  # rouge-score takes (target, prediction)
        got = overlap_scores(cand, ref)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert got[key] == pytest.approx(want[key].fmeasure, abs=1e-12), (key, cand, ref)


def test_sentence_bleu_equals_sacrebleu(pairs):
    for cand, ref in pairs:
        assert overlap_scores(cand, ref)["bleu"] == pytest.approx(sacrebleu.sentence_bleu(cand, [ref]).score, abs=1e-9)


def test_corpus_bleu_equals_sacrebleu(pairs):
    real = pairs[:40]
    stats = np.array([overlap_scores(c, r)["bleu_stats"] for c, r in real]).sum(axis=0)
    want = sacrebleu.corpus_bleu([c for c, _ in real], [[r for _, r in real]]).score
    assert float(bleu_from_stats(stats)) == pytest.approx(want, abs=1e-9)
    few = pairs[-3:]  # short segments: orders without a match (smoothing) or without any n-gram
    stats = np.array([overlap_scores(c, r)["bleu_stats"] for c, r in few]).sum(axis=0)
    assert float(bleu_from_stats(stats)) == pytest.approx(
        sacrebleu.corpus_bleu([c for c, _ in few], [[r for _, r in few]]).score, abs=1e-9
    )


def test_summary_intervals_follow_the_documented_resampling(pairs):
    rows = [{"id": str(i), "bart_score": -1.0 - i / 10, **overlap_scores(c, r)} for i, (c, r) in enumerate(pairs[:40])]
    summary = summarize(rows, resamples=200, seed=3)
    idx = np.random.default_rng(3).integers(0, 40, size=(200, 40))
    means = np.array([r["rouge1"] for r in rows])[idx].mean(axis=1)
    assert summary["rouge1"]["low"] == pytest.approx(np.percentile(means, 2.5))
    assert summary["rouge1"]["estimate"] == pytest.approx(np.mean([r["rouge1"] for r in rows]))
    corpus = [sacrebleu.corpus_bleu([pairs[j][0] for j in row], [[pairs[j][1] for j in row]]).score for row in idx]
    assert summary["bleu"]["high"] == pytest.approx(np.percentile(corpus, 97.5))
    same = paired(rows, rows, resamples=200, seed=3)
    assert all(same[m]["low"] == same[m]["high"] == 0 for m in ("bart_score", "rouge1", "bleu"))
    shifted = [{**r, "bart_score": r["bart_score"] + 0.5} for r in rows]
    assert paired(rows, shifted)["bart_score"]["estimate"] == pytest.approx(0.5)
