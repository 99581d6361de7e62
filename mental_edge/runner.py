"""Analysing a stream of input rows into records: IMHI query rows, flagged rows, resume, limits.

`analysis` decides one post; this module walks the rows, skips what a resumed output already holds, and
turns results into records (one per post and task) with what produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from mental_edge.analysis import Analyzer, TaskResult
from mental_edge.io.readers import InputRow
from mental_edge.tasks import Task, TaskSet

FIELDS = ["id", "task", "label", "probabilities", "explanation", "answer", "gold", "flags", "template_sha256", "run"]


@dataclass
class RunSummary:
    rows: int = 0  # input rows seen
    records: int = 0  # records written now
    skipped: int = 0  # records a resumed output already held
    flagged: int = 0
    by_task: dict[str, list[dict]] = field(default_factory=dict)  # {"id", "gold", "pred"} for eval


def run_analysis(
    analyzer: Analyzer,
    rows: Iterable[InputRow],
    tasks: Sequence[Task],
    *,
    taskset: TaskSet | None = None,
    done: set[tuple[str, str]] = frozenset(),
    write: Callable[[dict], None] = lambda record: None,
    limit: int | None = None,
    on_row: Callable[[], None] | None = None,
) -> RunSummary:
    """Analyse each row for each task and `write` its records.

    With `taskset`, rows are IMHI queries: each row's own task and post are read from its query (`tasks`,
    if given, filters them) and its gold answer becomes the record's `gold` label.
    """
    summary = RunSummary()
    run = analyzer.run_info()
    for row in rows:
        if limit is not None and summary.rows >= limit:
            break
        summary.rows += 1
        for record in _row_records(analyzer, row, tasks, taskset, done, run):
            if record is None:
                summary.skipped += 1
                continue
            write(record)
            summary.records += 1
            summary.flagged += bool(record["flags"])
            summary.by_task.setdefault(record["task"], []).append(
                {"id": record["id"], "gold": record["gold"], "pred": record["label"]}
            )
        if on_row:
            on_row()
    return summary


def _row_records(analyzer, row: InputRow, tasks, taskset, done, run):
    """The records of one row; None stands for a record the output already holds."""
    post, gold, row_tasks, flag = row.text, None, list(tasks), row.flag
    if taskset is not None and flag is None:
        found = taskset.detect(row.text)
        if found is None:
            flag = "not an IMHI query of a known task"
        else:
            task, form, post = found
            if row_tasks and task not in row_tasks:
                return
            row_tasks = [task]
            gold = task.parse_answer(row.gold, form) if row.gold is not None else None
    if flag is not None and not row_tasks:  # an unreadable IMHI row: one record, named by its flag only
        flagged = TaskResult("-", "-", None, None, None, flags=[flag])
        yield None if (row.id, "-") in done else _record(row.id, flagged, None, None, run)
        return
    todo = [t for t in row_tasks if (row.id, t.name) not in done]
    yield from (None for _ in range(len(row_tasks) - len(todo)))
    if flag is not None:
        results = [TaskResult(t.name, analyzer.form(t), None, None, None, flags=[flag]) for t in todo]
    else:
        results = analyzer.analyze(post, todo)
    for task, result in zip(todo, results):
        yield _record(row.id, result, task, gold, run)


def _record(row_id: str, result: TaskResult, task: Task | None, gold: str | None, run: dict) -> dict:
    return {
        "id": row_id,
        "task": result.task,
        "label": result.label,
        "probabilities": result.probabilities,
        "explanation": result.explanation,
        "answer": result.answer,
        "gold": gold,
        "flags": result.flags,
        "template_sha256": task.template_hash(result.form) if task is not None else None,
        "run": run,
    }
