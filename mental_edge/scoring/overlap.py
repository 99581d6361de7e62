"""Word-overlap scores of an explanation against a reference: ROUGE-1/2/L as the `rouge-score` package computes
them (HF `evaluate`'s rouge, which the benchmark used: lower-cased, runs of characters other than a-z and 0-9 as
separators, no stemming; F-measure) and BLEU's counts as sacrebleu gathers them (13a tokenization, cased).

Written here rather than taken from those packages: each is a few lines, rouge-score pulls in nltk and absl, and
corpus BLEU's bootstrap needs each row's counts, which sacrebleu keeps to itself. tests/test_overlap.py checks both
against the packages on real IMHI explanations.
"""

from __future__ import annotations

import re
from collections import Counter

from mental_edge.report.explanations import ORDER, bleu_from_stats

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_BLEU_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # mteval-v13a: punctuation and symbols apart
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma, unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... or before one
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
)


def rouge_tokens(text: str) -> list[str]:
    return _NON_ALPHANUM.sub(" ", text.lower()).split()


def rouge(candidate: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of the candidate against the reference."""
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
    return {"rouge1": _ngram_f(cand, ref, 1), "rouge2": _ngram_f(cand, ref, 2), "rougeL": _lcs_f(cand, ref)}


def _f(matched: int, n_cand: int, n_ref: int) -> float:
    precision, recall = matched / max(n_cand, 1), matched / max(n_ref, 1)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _ngram_f(cand: list[str], ref: list[str], n: int) -> float:
    c, r = _ngrams(cand, n), _ngrams(ref, n)
    return _f(sum(min(k, c[g]) for g, k in r.items()), sum(c.values()), sum(r.values()))


def _lcs_f(cand: list[str], ref: list[str]) -> float:
    if not cand or not ref:
        return 0.0
    previous = [0] * (len(cand) + 1)
    for word in ref:
        current = [0]
        for j, other in enumerate(cand):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return _f(previous[-1], len(cand), len(ref))


def bleu_tokens(text: str) -> list[str]:
    """sacrebleu's default tokenizer (13a) on a segment, trailing whitespace dropped first as sacrebleu does."""
    line = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _BLEU_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def bleu_stats(candidate: str, reference: str) -> list[int]:
    """[candidate length, reference length, matched 1..4-grams, candidate 1..4-grams]; summed over rows they give
    corpus BLEU (report.explanations.bleu_from_stats)."""
    cand, ref = bleu_tokens(candidate), bleu_tokens(reference)
    matched, total = [0] * ORDER, [0] * ORDER
    for n in range(1, ORDER + 1):
        c, r = _ngrams(cand, n), _ngrams(ref, n)
        total[n - 1] = sum(c.values())
        matched[n - 1] = sum(min(k, r[g]) for g, k in c.items())
    return [len(cand), len(ref), *matched, *total]


def overlap_scores(candidate: str, reference: str) -> dict:
    """A row's overlap scores: ROUGE F-measures, sentence BLEU (sacrebleu's `sentence_bleu`) and BLEU's counts."""
    stats = bleu_stats(candidate, reference)
    return {
        **rouge(candidate, reference),
        "bleu": float(bleu_from_stats(stats, effective_order=True)),
        "bleu_stats": stats,
    }
