"""`mental-edge verify`: how closely a model file follows its reference, on a few IMHI rows per task.

The reference is the Hugging Face checkpoint run by transformers (`verify/reference.py`, the `verify` extra), or
another model file (`--against`: the quantization report). Both sides see the same token ids: the model file's
own tokenization of each prompt and of each label's answer sentence, as `Analyzer` builds them.

The two models are never held at once: the model file runs first and keeps what `verify/measures.py` needs per
position; it is then freed and the reference runs, compared as it goes. What can be checked before the long run
(architecture, layers, width, vocabulary) is, each as one line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mental_edge.engine import Engine
from mental_edge.errors import MentalEdgeError
from mental_edge.verification.measures import (
    Item,
    Report,
    Say,
    compare,
    keep_logits,
    prompt_logits_of,
    report,
    thresholds_for,
)

DEFAULT_ROWS = 2  # IMHI rows per task


def imhi_sample() -> Path:
    """The IMHI rows shipped with the package (prompts/imhi-sample: four a task, both forms), used when no data
    is given: an air-gapped machine has no copy of the test set."""
    return Path(str(resources.files("mental_edge.prompts") / "imhi-sample"))


MAX_QUERY_CHARS = 2000  # longer queries are skipped: they only cost time


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
        keep_logits(item, prompt_logits_of(engine, item))
        items.append(item)
        if say:
            say(f"  {row_id} {task.name}: {len(item.top_ids)} positions")
    return items


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
    """general.architecture of a GGUF file ("bart" for a CTranslate2 folder), read without loading the model
    (the bounded header reader: a damaged header is one line)."""
    from mental_edge.engine.file_check import header_of

    path = Path(path)
    if path.is_dir():
        return "bart"
    arch = header_of(path).values.get("general.architecture") if path.is_file() else None
    if not isinstance(arch, str):
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
    from mental_edge.prompting import load_tasks

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
    from mental_edge.prompting import load_tasks
    from mental_edge.verification import reference as hf

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
