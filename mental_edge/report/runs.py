"""Runs read back for a report: analyze records (.jsonl/.csv, as io.records writes them) or an eval report (.json).

A `Run` holds each task's rows (id, label, probabilities, explanation, flags, gold) and what produced them.
Anything that is not mental-edge output stops with one line naming the file and the line or field.
Post text is never in a record; it is read from the run's input (`--data`) only when the user asks for it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mental_edge.errors import MentalEdgeError
from mental_edge.io.readers import read_file
from mental_edge.report.eval_report import load_report

RECORD_KEYS = ("id", "task", "label")  # what every record has (io.records via runner.FIELDS)
JSON_CELLS = ("probabilities", "flags", "run")  # CSV cells holding JSON


@dataclass
class Row:
    id: str
    label: str | None
    probabilities: dict | None = None
    explanation: str | None = None
    flags: list = field(default_factory=list)
    gold: str | None = None
    template_sha256: str | None = None
    text: str | None = None  # the post, only with --include-text
    scores: dict | None = None  # the explanation's scores against the gold reference (report.explanations)


@dataclass
class Run:
    path: Path
    tasks: dict[str, list[Row]]  # task name -> rows in file order; "-" holds rows no task could take
    settings: dict  # the run info of the first record (model, sha256, quantization, engine settings)
    varying: list[str] = field(default_factory=list)  # settings that differ between records
    kind: str = "records"  # or "eval report"
    label: str | None = None  # a shorter name for the page (see `name_runs`)
    explanations: dict | None = None  # a scored report's explanation part, its per-row scores moved onto the rows

    @property
    def name(self) -> str:
        return self.label or str(self.path)


def name_runs(runs: list[Run]) -> None:
    """Runs are named by their file names where those tell them apart, else by their paths as given."""
    if len({run.path.name for run in runs}) == len(runs):
        for run in runs:
            run.label = run.path.name


def load_run(path, gold_column: str | None = None) -> Run:
    """One run file; `gold_column` names the record field holding gold labels (default `gold`)."""
    path = Path(path)
    if not path.is_file():
        raise MentalEdgeError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _eval_report(path)
    if suffix not in (".jsonl", ".csv"):
        raise MentalEdgeError(f"{path}: not mental-edge output (expected .jsonl or .csv records, or an eval .json)")
    records = _jsonl_records(path) if suffix == ".jsonl" else _csv_records(path)
    return _run_from_records(path, records, gold_column or "gold")


def add_data(runs: list[Run], data, *, text: bool, gold_column: str | None, id_column: str | None) -> None:
    """Post text and/or gold labels from the run's input file, matched by row id."""
    data = Path(data)
    if text:
        texts = {row.id: row.text for row in read_file(data, id_column=id_column)}
        for row in _all_rows(runs):
            row.text = texts.get(row.id)
    if gold_column:
        golds = _column(data, gold_column, id_column)
        for row in _all_rows(runs):
            row.gold = golds.get(row.id)


def _all_rows(runs: list[Run]) -> Iterator[Row]:
    for run in runs:
        for rows in run.tasks.values():
            yield from rows


def _run_from_records(path: Path, records: Iterator[tuple[int, dict]], gold_column: str) -> Run:
    tasks: dict[str, list[Row]] = {}
    settings, varying = None, set()
    for number, record in records:
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise MentalEdgeError(f"{path}: line {number} is not a mental-edge record (no {missing[0]!r} field)")
        run = record.get("run") if isinstance(record.get("run"), dict) else {}
        if settings is None:
            settings = run
        elif run != settings:
            varying |= {k for k in set(run) | set(settings) if run.get(k) != settings.get(k)}
        tasks.setdefault(str(record["task"]), []).append(_row(path, number, record, gold_column))
    if settings is None:
        raise MentalEdgeError(f"{path}: no records in this file")
    return Run(path, tasks, settings, sorted(varying))


def _row(path: Path, number: int, record: dict, gold_column: str) -> Row:
    probabilities = record.get("probabilities")
    if probabilities is not None and not (
        isinstance(probabilities, dict) and all(isinstance(v, (int, float)) for v in probabilities.values())
    ):
        raise MentalEdgeError(f"{path}: line {number}: field 'probabilities' is not a label-to-number object")
    flags = record.get("flags") or []
    gold = record.get(gold_column)
    return Row(
        id=str(record["id"]),
        label=_text_or_none(record.get("label")),
        probabilities=probabilities,
        explanation=_text_or_none(record.get("explanation")),
        flags=[str(f) for f in flags] if isinstance(flags, list) else [str(flags)],
        gold=None if gold in (None, "") else str(gold),
        template_sha256=_text_or_none(record.get("template_sha256")),
    )


def _text_or_none(value) -> str | None:
    return None if value in (None, "") else str(value)


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise MentalEdgeError(f"{path}: line {number} is not JSON; not mental-edge records") from None
            if not isinstance(record, dict):
                raise MentalEdgeError(f"{path}: line {number} is not a JSON object; not mental-edge records")
            yield number, record


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        try:
            for record in reader:
                for key in JSON_CELLS:
                    record[key] = _json_cell(path, reader.line_num, key, record.get(key))
                yield reader.line_num, record
        except csv.Error as exc:
            raise MentalEdgeError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
        if reader.fieldnames is None:
            raise MentalEdgeError(f"{path}: empty file; not mental-edge records")


def _json_cell(path: Path, number: int, key: str, value):
    if value in (None, ""):
        return None
    try:
        return json.loads(value)
    except ValueError:
        raise MentalEdgeError(f"{path}: line {number}: column {key!r} is not JSON; not mental-edge records") from None


def _column(path: Path, column: str, id_column: str | None) -> dict[str, str]:
    """Column `column` of a .csv or .jsonl input by row id (the id column, else the row number as readers do)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise MentalEdgeError(f"{path}: --gold-column reads a .csv or .jsonl input")
    with _open(path) as handle:
        if suffix == ".csv":
            rows = list(csv.DictReader(handle))
        else:
            try:
                rows = [json.loads(line) for line in handle if line.strip()]
            except ValueError:
                raise MentalEdgeError(f"{path}: a line is not JSON; cannot read {column!r} from it") from None
    if rows and column not in rows[0]:
        raise MentalEdgeError(f"{path}: no column {column!r}; columns: {', '.join(map(repr, rows[0]))}")
    out = {}
    for number, fields in enumerate(rows, start=1):
        row_id = fields.get(id_column) if id_column else None
        value = fields.get(column)
        if value not in (None, ""):
            out[str(number) if row_id in (None, "") else str(row_id)] = str(value)
    return out


def _eval_report(path: Path) -> Run:
    """An eval report's rows (id, gold, pred; probabilities where the eval kept them)."""
    report = load_report(path)
    rows = report.get("rows")
    if not isinstance(rows, dict):
        raise MentalEdgeError(f"{path}: eval report without per-row predictions ('rows'); rerun eval to get them")
    tasks = {
        task: [
            Row(id=str(r["id"]), label=r.get("pred"), probabilities=r.get("probabilities"), gold=r.get("gold"))
            for r in task_rows
        ]
        for task, task_rows in rows.items()
    }
    part = report.get("explanations")
    if isinstance(part, dict) and isinstance(part.get("rows"), dict):
        for task, scored in part["rows"].items():
            by_id = {str(r["id"]): r for r in scored}
            for row in tasks.get(task, []):
                row.scores = by_id.get(row.id)
        part = {k: v for k, v in part.items() if k != "rows"}
    return Run(path, tasks, dict(report.get("run") or {}), kind="eval report", explanations=part or None)


def _open(path: Path):
    try:
        return path.open(encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise MentalEdgeError(f"{path}: cannot read: {exc.strerror}") from None
