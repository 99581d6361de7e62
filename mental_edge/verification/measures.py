"""The figures of `mental-edge verify`: what the model file keeps per position, and how the reference's logits
and label scores are held against it (see `verify` for the checks that run them).

The model file keeps, per prompt position, its 64 largest logits (with their token ids) and the log of its softmax
denominator: 64 x 8 bytes, so even 20,000 positions keep 10 MB. From those and the reference's full rows:
- top-1 agreement: the model file's best next token equals the reference's, over every prompt position;
- mean KL(reference || model file) over the partition {the model file's 64 best tokens, everything else}: a lower
  bound of the full KL divergence, short of it only by how the two spread the rest, which holds little;
- worst top-5 logit difference: |reference - model file| on the reference's five best tokens at each position (a
  token outside the model file's 64 counts with its distance to the 64th logit, a lower bound);
- label agreement and the largest difference in a label's probability (P(label) as `analyze` computes it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from mental_edge.engine import Seq2SeqPrompt
from mental_edge.errors import MentalEdgeError

KEEP = 64  # logits kept per position of the model file
# Below this top-1 agreement the two are not the same model: even Q2_K keeps the best token at most positions.
NOT_A_CONVERSION = 0.5

Say = Callable[[str], None]


@dataclass(frozen=True)
class Thresholds:
    """What a passing comparison must reach. `worst_top5` None: reported, not judged."""

    top1: float
    mean_kl: float
    worst_top5: float | None
    label_agreement: float
    label_prob: float

    def describe(self) -> str:
        top5 = f", worst top-5 <= {self.worst_top5:g}" if self.worst_top5 is not None else ""
        return (
            f"top-1 >= {self.top1:.0%}, mean KL <= {self.mean_kl:g}{top5}, "
            f"labels >= {self.label_agreement:.0%}, label prob diff <= {self.label_prob:g}"
        )


# A conversion (f32/f16/bf16/q8_0 file against the checkpoint): what llama.cpp's arithmetic leaves, measured on
# the SmolLM2 rebuild and the tiny GLM (worst top-5 0.02-0.08, top-1 equal but at near-ties); a wrong
# permutation, epsilon or rope base costs whole logits and tens of percent of top-1.
CONVERSION = Thresholds(top1=0.98, mean_kl=0.005, worst_top5=0.25, label_agreement=0.95, label_prob=0.05)
# A quantized file (against its reference or its f16): the labels must hold; the logits move by design.
QUANTIZED = Thresholds(top1=0.8, mean_kl=0.1, worst_top5=None, label_agreement=0.9, label_prob=0.2)
UNQUANTIZED = ("F32", "F16", "BF16", "ALL_F32", "MOSTLY_F16", "MOSTLY_BF16", "FLOAT32", "FLOAT16")


def thresholds_for(quantization: str) -> Thresholds:
    """Conversion thresholds for a file in floats (f32, f16, bf16), quantized ones otherwise (Q8_0 too: on the
    135M SmolLM2 it moves top-1 at 7% of the positions)."""
    return CONVERSION if quantization.upper() in UNQUANTIZED else QUANTIZED


@dataclass
class Item:
    """One (row, task): the scored prompt and what the model file made of it."""

    row: str
    task: str
    query: str
    prompt: list[int]  # decoder-only: the tokens all answers share; encoder-decoder: the encoder's input
    candidates: list[list[int]]
    encoder_decoder: bool
    scores: list[float] = field(default_factory=list)
    top_ids: np.ndarray | None = None  # (positions, KEEP) int32, best first
    top_logits: np.ndarray | None = None  # (positions, KEEP) float32
    log_norm: np.ndarray | None = None  # (positions,) float32: logsumexp of each position's logits
    vocab_size: int = 0

    def positions(self) -> list[list[int] | Seq2SeqPrompt]:
        """What `prompt_logits` reads: the prompt and the first label's answer; for an encoder-decoder model, whose
        prompt positions are the decoder's, the decoder reading each label's answer after its start tokens."""
        if self.encoder_decoder:
            return [Seq2SeqPrompt(tuple(self.prompt), tuple(c)) for c in self.candidates]
        return [list(self.prompt) + list(self.candidates[0])]


@dataclass
class Figures:
    positions: int = 0
    top1_same: int = 0
    kl_sum: float = 0.0
    worst_top5: float = 0.0
    labels: int = 0
    labels_same: int = 0
    worst_label_prob: float = 0.0
    worst_label_where: str = ""

    @property
    def top1(self) -> float:
        return self.top1_same / self.positions if self.positions else 0.0

    @property
    def mean_kl(self) -> float:
        return self.kl_sum / self.positions if self.positions else 0.0

    @property
    def label_agreement(self) -> float:
        return self.labels_same / self.labels if self.labels else 0.0

    def failures(self, limits: Thresholds) -> list[str]:
        """The figures that miss their threshold, each with its value."""
        out = []
        if self.top1 < limits.top1:
            out.append(f"top-1 agreement {self.top1:.1%} < {limits.top1:.0%}")
        if self.mean_kl > limits.mean_kl:
            out.append(f"mean KL {self.mean_kl:.4g} > {limits.mean_kl:g}")
        if limits.worst_top5 is not None and self.worst_top5 > limits.worst_top5:
            out.append(f"worst top-5 logit difference {self.worst_top5:.3f} > {limits.worst_top5:g}")
        if self.label_agreement < limits.label_agreement:
            out.append(f"label agreement {self.label_agreement:.0%} < {limits.label_agreement:.0%}")
        if self.worst_label_prob > limits.label_prob:
            out.append(f"label probability difference {self.worst_label_prob:.3f} > {limits.label_prob:g}")
        return out


@dataclass
class Report:
    model: str
    reference: str
    kind: str  # "reference" (a checkpoint) or "against" (another model file)
    figures: Figures
    thresholds: Thresholds
    failed: list[str]

    @property
    def passed(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        f = self.figures
        where = f" ({f.worst_label_where})" if f.worst_label_where else ""
        return [
            f"model {self.model}",
            f"reference {self.reference}",
            f"next-token top-1 agreement: {f.top1_same}/{f.positions} positions ({f.top1:.2%})",
            f"mean KL divergence (reference || model): {f.mean_kl:.3g} nats",
            f"worst top-5 logit difference: {f.worst_top5:.4f}",
            f"label agreement: {f.labels_same}/{f.labels}",
            f"largest label probability difference: {f.worst_label_prob:.4f}{where}",
            self.verdict(),
        ]

    def verdict(self) -> str:
        head = "PASS" if self.passed else "FAIL: " + "; ".join(self.failed)
        if self.figures.top1 < NOT_A_CONVERSION:
            head += " - the model file does not behave as a conversion of this reference (or a badly broken one)"
        return f"verdict: {head} (thresholds: {self.thresholds.describe()})"

    def summary(self) -> dict:
        """What the store entry and the records' `run` keep."""
        f = self.figures
        return {
            "verified": self.passed,
            "against": self.reference,
            "kind": self.kind,
            "label_agreement": f"{f.labels_same}/{f.labels}",
            "top1": round(f.top1, 4),
            "mean_kl": round(f.mean_kl, 5),
            "worst_top5": round(f.worst_top5, 4),
            "worst_label_prob": round(f.worst_label_prob, 4),
            "failed": self.failed,
            "thresholds": asdict(self.thresholds),
        }


# ---------------------------------------------------------------- per position


class LogitsSource(Protocol):
    """Either side of a check: an Engine (which declares `prompt_logits`) or the transformers reference."""

    def prompt_logits(self, prompt: list[int] | Seq2SeqPrompt) -> np.ndarray: ...


def prompt_logits_of(side: LogitsSource, item: Item) -> np.ndarray:
    """The logits of every position of the item, one row each, from either side."""
    return np.concatenate([np.asarray(side.prompt_logits(p), dtype=np.float32) for p in item.positions()])


def keep_logits(item: Item, logits: np.ndarray) -> None:
    k = min(KEEP, logits.shape[1])
    ids = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(logits, ids, 1)
    order = np.argsort(-vals, axis=1)
    item.top_ids = np.take_along_axis(ids, order, 1).astype(np.int32)
    item.top_logits = np.take_along_axis(vals, order, 1)
    item.log_norm = _logsumexp(logits)
    item.vocab_size = logits.shape[1]


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


# ---------------------------------------------------------------- the comparison


def compare(items: Sequence[Item], reference, say: Say | None = None) -> Figures:
    """Run the reference (anything with `prompt_logits` and `score`) on the items' tokens and gather the figures."""
    figures = Figures()
    for item in items:
        ref_logits = prompt_logits_of(reference, item)
        if ref_logits.shape[0] != item.top_ids.shape[0]:
            got, want = ref_logits.shape[0], item.top_ids.shape[0]
            raise MentalEdgeError(f"{item.row}: the reference gave {got} positions, the model file {want}")
        if ref_logits.shape[1] != item.vocab_size:
            raise MentalEdgeError(
                f"the reference has another vocabulary: {ref_logits.shape[1]} tokens, the model file {item.vocab_size}"
            )
        _add_positions(figures, item, ref_logits)
        ref_scores = reference.score(item.prompt, item.candidates)
        _add_labels(figures, item, ref_scores)
        if say:
            say(f"  {item.row} {item.task}: compared")
    return figures


def _add_positions(figures: Figures, item: Item, ref: np.ndarray) -> None:
    n = ref.shape[0]
    rows = np.arange(n)[:, None]
    figures.positions += n
    figures.top1_same += int(np.sum(ref.argmax(axis=1) == item.top_ids[:, 0]))
    # KL over {kept tokens, the rest}: p from the reference's full row, q from the kept logits
    ref_norm = _logsumexp(ref)
    log_p = ref[rows, item.top_ids] - ref_norm[:, None]
    log_q = item.top_logits - item.log_norm[:, None]
    p_rest = np.clip(1 - np.exp(log_p).sum(axis=1), 1e-12, None)
    q_rest = np.clip(1 - np.exp(log_q).sum(axis=1), 1e-12, None)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1) + p_rest * (np.log(p_rest) - np.log(q_rest))
    figures.kl_sum += float(np.clip(kl, 0, None).sum())
    figures.worst_top5 = max(figures.worst_top5, _worst_top5(item, ref))


def _worst_top5(item: Item, ref: np.ndarray) -> float:
    top5 = np.argsort(-ref, axis=1)[:, :5]
    worst = 0.0
    for pos, ids in enumerate(top5):
        kept = dict(zip(item.top_ids[pos].tolist(), item.top_logits[pos].tolist()))
        floor = float(item.top_logits[pos, -1])
        for tok in ids.tolist():
            ref_value = float(ref[pos, tok])
            diff = abs(ref_value - kept[tok]) if tok in kept else max(ref_value - floor, 0.0)
            worst = max(worst, diff)
    return worst


def _add_labels(figures: Figures, item: Item, ref_scores: Sequence[float]) -> None:
    ours, theirs = _softmax(item.scores), _softmax(ref_scores)
    figures.labels += 1
    figures.labels_same += int(np.argmax(ours) == np.argmax(theirs))
    diff = float(np.max(np.abs(ours - theirs)))
    if diff >= figures.worst_label_prob:
        figures.worst_label_prob, figures.worst_label_where = diff, f"{item.row} {item.task}"


def _softmax(scores: Sequence[float]) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def report(model: str, reference: str, kind: str, figures: Figures, limits: Thresholds) -> Report:
    return Report(model, reference, kind, figures, limits, figures.failures(limits))
