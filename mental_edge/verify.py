"""`mental-edge verify`: how closely a model file follows its reference, on a few IMHI rows per task.

The reference is the Hugging Face checkpoint run by transformers (`verify_reference`, the `verify` extra), or
another model file (`--against`: the quantization report). Both sides see the same token ids: the model file's
own tokenization of each prompt and of each label's answer sentence, as `Analyzer` builds them.

The two models are never held at once. The model file runs first and keeps, per prompt position, its 64 largest
logits (with their token ids) and the log of its softmax denominator; it is then freed and the reference runs,
comparing as it goes. From those:
- top-1 agreement: the model file's best next token equals the reference's, over every prompt position;
- mean KL(reference || model file) over the partition {the model file's 64 best tokens, everything else}: a lower
  bound of the full KL divergence, short of it only by how the two spread the rest, which holds little;
- worst top-5 logit difference: |reference - model file| on the reference's five best tokens at each position (a
  token outside the model file's 64 counts with its distance to the 64th logit, a lower bound);
- label agreement and the largest difference in a label's probability (P(label) as `analyze` computes it).
Stored per position: 64 x 8 bytes, so even 20,000 positions keep 10 MB.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mental_edge.engine import Engine, Seq2SeqPrompt
from mental_edge.errors import MentalEdgeError

KEEP = 64  # logits kept per position of the model file
DEFAULT_ROWS = 2  # IMHI rows per task
MAX_QUERY_CHARS = 2000  # longer queries are skipped: they only cost time

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


# ---------------------------------------------------------------- rows


def imhi_rows(data: Path, task_names: Sequence[str] | None, rows: int, taskset) -> Iterator[tuple[str, object, str]]:
    """(row id, task, post) for the first `rows` rows of each task's IMHI file under `data` (test_instruction/
    when it holds one), skipping queries over MAX_QUERY_CHARS."""
    data = Path(data)
    if (data / "test_instruction").is_dir():
        data = data / "test_instruction"
    if not data.exists():
        raise MentalEdgeError(f"{data}: no such IMHI file or folder")
    files = sorted(data.glob("*.csv")) if data.is_dir() else [data]
    wanted = None if not task_names else {t.name for name in task_names for t in taskset.get(name)}
    counts: dict[str, int] = {}
    for path in files:
        for number, query in _queries(path):
            found = taskset.detect(query)
            if found is None or len(query) > MAX_QUERY_CHARS:
                continue
            task, _form, post = found
            if (wanted is not None and task.name not in wanted) or counts.get(task.name, 0) >= rows:
                continue
            counts[task.name] = counts.get(task.name, 0) + 1
            yield f"{path.name}:{number}", task, post
    if not counts:
        raise MentalEdgeError(f"{data}: no IMHI query of the tasks asked for (columns 'query', one row a post)")


def _queries(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if "query" not in (reader.fieldnames or []):
            raise MentalEdgeError(f"{path}: no 'query' column, so not an IMHI file")
        for number, row in enumerate(reader, start=2):
            if row.get("query"):
                yield number, row["query"]


# ---------------------------------------------------------------- the model file's side


class _Recorder:
    """Stands in for the engine inside an `Analyzer`: whatever `score` is asked is passed on and kept, so the
    prompts are exactly those `analyze` scores."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.calls: list[tuple[list[int], list[list[int]], list[float]]] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def score(self, prompt, continuations):
        scores = self._engine.score(prompt, continuations)
        self.calls.append((list(prompt), [list(c) for c in continuations], list(scores)))
        return scores


def record_model(engine: Engine, rows, *, prompt_format: str | None = None, say: Say | None = None) -> list[Item]:
    """Run the model file on every (row, task): its label scores and its kept logits per position."""
    from mental_edge.analysis import Analyzer

    recorder = _Recorder(engine)
    analyzer = Analyzer(recorder, explain=False, prompt_format=prompt_format)
    items = []
    for row_id, task, post in rows:
        form = analyzer.form(task)
        query = task.render(post, form)
        analyzer.label_probabilities(query, task, form)
        prompt, candidates, scores = recorder.calls.pop()
        item = Item(row_id, task.name, query, prompt, candidates, engine.encoder_decoder, scores)
        _keep(item, _prompt_logits(engine, item))
        items.append(item)
        if say:
            say(f"  {row_id} {task.name}: {len(item.top_ids)} positions")
    return items


def _prompt_logits(side, item: Item) -> np.ndarray:
    """The logits of every position of the item, one row each, from either side."""
    method = getattr(side, "prompt_logits", None)
    if method is None:
        raise MentalEdgeError(f"{type(side).__name__} gives no logits per position, so it cannot be verified")
    return np.concatenate([np.asarray(method(p), dtype=np.float32) for p in item.positions()])


def _keep(item: Item, logits: np.ndarray) -> None:
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
        ref_logits = _prompt_logits(reference, item)
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


# ---------------------------------------------------------------- the two checks


@dataclass
class ModelRun:
    items: list[Item]
    name: str
    architecture: str
    quantization: str
    vocab_size: int
    hparams: dict
    query_tokens: list[int]  # the plain tokens of the first query, to hold against the other side's tokenizer


def file_architecture(path) -> str:
    """general.architecture of a GGUF file ("bart" for a CTranslate2 folder), read without loading the model."""
    from mental_edge.engine import gguf_architecture

    path = Path(path)
    if path.is_dir():
        return "bart"
    arch = gguf_architecture(path) if path.is_file() else None
    if arch is None:
        raise MentalEdgeError(f"{path}: not a GGUF model file with its architecture in the header")
    return arch


def run_model(path, rows, *, check=None, engine_options=None, prompt_format=None, say: Say | None = None):
    """Load the model file, record every item, free it. `check(run)` sees the run after its first item, so that
    a reference that cannot match stops it early."""
    from mental_edge.engine import load_engine

    engine = load_engine(path, **(engine_options or {}))
    try:
        items = record_model(engine, rows[:1], prompt_format=prompt_format, say=say)
        info = engine.info
        meta = info.metadata or {}
        arch = info.architecture
        hparams = {"layers": meta.get(f"{arch}.block_count"), "width": meta.get(f"{arch}.embedding_length")}
        first = items[0]
        tokens = engine.tokenize(first.query)
        run = ModelRun(items, info.name, arch, info.quantization, first.vocab_size, hparams, tokens)
        if check is not None:
            check(run)
        run.items += record_model(engine, rows[1:], prompt_format=prompt_format, say=say)
        return run
    finally:
        engine.close()


def verify_against(model, other, data, *, tasks=None, rows=DEFAULT_ROWS, engine_options=None, say=None) -> Report:
    """The same figures between two model files, the second the reference (say a Q4_K_M against its f16)."""
    from mental_edge.engine import load_engine
    from mental_edge.tasks import load_tasks

    kind, other_kind = file_architecture(model), file_architecture(other)
    if kind != other_kind:
        raise MentalEdgeError(f"{other} is a {other_kind} model; the model file is {kind}")
    run = run_model(model, list(imhi_rows(data, tasks, rows, load_tasks())), engine_options=engine_options, say=say)
    ref = load_engine(other, **(engine_options or {}))
    try:
        _same_tokens(run, ref.tokenize(run.items[0].query), str(other))
        figures = compare(run.items, ref, say=say)
    finally:
        ref.close()
    return report(str(model), str(other), "against", figures, thresholds_for(run.quantization))


def verify_reference(
    model,
    checkpoint,
    data,
    *,
    tasks=None,
    rows=DEFAULT_ROWS,
    device=None,
    dtype="float32",
    engine_options=None,
    say=None,
) -> Report:
    """The model file against the Hugging Face checkpoint it was converted from, run by transformers."""
    from mental_edge import verify_reference as hf
    from mental_edge.tasks import load_tasks

    checkpoint = Path(checkpoint)
    hf.check_extra()
    _, arch, _ = hf.layout_of(checkpoint)
    kind = file_architecture(model)
    if kind != arch:
        raise MentalEdgeError(f"{checkpoint} is a {arch} model; the model file is {kind}")

    def check(run: ModelRun) -> None:
        _same_shape(run, hf.config_hparams(checkpoint), str(checkpoint))
        tokens = hf.tokenize(checkpoint, run.items[0].query)
        if tokens is not None:
            _same_tokens(run, tokens, str(checkpoint))

    rows = list(imhi_rows(data, tasks, rows, load_tasks()))
    run = run_model(model, rows, check=check, engine_options=engine_options, say=say)
    ref = hf.Reference(checkpoint, device=device, dtype=dtype)
    try:
        figures = compare(run.items, ref, say=say)
    finally:
        ref.close()
    return report(str(model), str(checkpoint), "reference", figures, thresholds_for(run.quantization))


def _same_kind(run: ModelRun, architecture: str, where: str) -> None:
    if run.architecture != architecture:
        raise MentalEdgeError(f"{where} is a {architecture} model; the model file is {run.architecture}")


def _same_tokens(run: ModelRun, tokens: list[int], where: str) -> None:
    if list(tokens) != list(run.query_tokens):
        ours = run.query_tokens
        at = next((i for i, (a, b) in enumerate(zip(tokens, ours)) if a != b), min(len(tokens), len(ours)))
        raise MentalEdgeError(
            f"{where} has another vocabulary: it tokenizes the first query differently from the model file "
            f"(from token {at} on)"
        )


def _same_shape(run: ModelRun, hparams: dict, where: str) -> None:
    for key, value in hparams.items():
        ours = run.hparams.get(key)
        if ours is not None and value is not None and int(ours) != int(value):
            raise MentalEdgeError(
                f"the model file is not a conversion of {where}: {key} {ours} in the file, {value} in the checkpoint"
            )


# ---------------------------------------------------------------- pull --verify


def pull_check(data, *, rows=DEFAULT_ROWS, tasks=None, device=None, dtype="float32", engine_options=None, say=None):
    """The `check` that `pull --verify` hands to `pull`: the converted file against the downloaded checkpoint, and
    the quantized file (if any) against the converted one. Returns what the store entry keeps; a layout that cannot
    be checked is kept as not verified, with the reason, and the pull goes on."""
    say = say or (lambda _message: None)
    options = {"tasks": tasks, "rows": rows, "engine_options": engine_options, "say": say}

    def check(checkpoint: Path, converted: Path, quantized: Path | None) -> dict:
        try:
            reports = [verify_reference(converted, checkpoint, data, device=device, dtype=dtype, **options)]
            if quantized is not None:
                reports.append(verify_against(quantized, converted, data, **options))
        except MentalEdgeError as exc:
            say(f"not verified: {exc}")
            return {"verified": False, "error": str(exc)}
        for rep in reports:
            for line in rep.lines():
                say(line)
        last = reports[-1].figures
        return {
            "verified": all(r.passed for r in reports),
            "label_agreement": f"{last.labels_same}/{last.labels}",
            "reference": reports[0].summary(),
            "quantization": reports[1].summary() if len(reports) > 1 else None,
        }

    return check
