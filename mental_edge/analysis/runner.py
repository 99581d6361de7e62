"""Analysing a stream of input rows into records: IMHI query rows, flagged rows, resume, limits.

`analysis` decides one post; this module walks the rows, skips what a resumed output already holds, and
turns results into records (one per post and task) with what produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from mental_edge.analysis import Analyzer, TaskResult
from mental_edge.io.readers import InputRow
from mental_edge.prompting import Task, TaskSet

FIELDS = ["id", "task", "label", "probabilities", "explanation", "answer", "gold", "flags", "template_sha256", "run"]


@dataclass
class RunSummary:
    rows: int = 0  # input rows seen
    records: int = 0  # records written now
    skipped: int = 0  # records a resumed output already held
    flagged: int = 0
    by_task: dict[str, list[dict]] = field(default_factory=dict)  # {"id", "gold", "pred", "probabilities", ...}

    def count(self, record: dict) -> None:
        """One more record written."""
        self.records += 1
        self.flagged += bool(record["flags"])
        self.by_task.setdefault(record["task"], []).append(
            {
                "id": record["id"],
                "gold": record["gold"],
                "pred": record["label"],
                "probabilities": record["probabilities"],
                "explanation": record["explanation"],  # for explanation scores (scoring/)
                "answer": record["answer"],  # a free answer, for the published classifiers
            }
        )


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
    """Analyse each row for each task and `write` its records, in input order (see `iter_records`)."""
    summary = RunSummary()
    for record in iter_records(
        analyzer, rows, tasks, taskset=taskset, done=done, limit=limit, on_row=on_row, summary=summary
    ):
        write(record)
        summary.count(record)
    return summary


def iter_records(
    analyzer: Analyzer,
    rows: Iterable[InputRow],
    tasks: Sequence[Task],
    *,
    taskset: TaskSet | None = None,
    done: AbstractSet[tuple[str, str]] = frozenset(),
    limit: int | None = None,
    on_row: Callable[[], None] | None = None,
    summary: RunSummary | None = None,
) -> Iterator[dict]:
    """Each row's records for each task, in input order, as the analysis goes (`summary` counts rows seen and
    records skipped).

    With `taskset`, rows are IMHI queries: each row's own task and post are read from its query (`tasks`,
    if given, filters them) and its gold answer becomes the record's `gold` label. `done` holds the (id, task)
    pairs a resumed output already has.
    """
    summary = summary if summary is not None else RunSummary()
    run = analyzer.run_info()

    def work():
        for row in rows:
            if limit is not None and summary.rows >= limit:
                return
            summary.rows += 1
            plan = _plan(row, tasks, taskset, done)
            summary.skipped += plan.skipped
            yield plan, plan.post if plan.flag is None else None, plan.todo

    for plan, results in analyzer.analyze_stream(work()):
        yield from _records(analyzer, plan, results, run)
        if on_row:
            on_row()


def work_left(
    row: InputRow, tasks: Sequence[Task], taskset: TaskSet | None = None, done: set[tuple[str, str]] = frozenset()
) -> tuple[bool, int]:
    """Whether `run_analysis` would still write a record for `row`, and how many of its records `done` holds
    (for a driver that sends out only the rows with work left: distributed.py)."""
    plan = _plan(row, tasks, taskset, done)
    return bool(plan.todo) or (plan.flag is not None and not plan.skipped), plan.skipped


@dataclass
class _RowPlan:
    row: InputRow
    post: str | None
    todo: list[Task]  # tasks still to do for this row
    gold: str | None = None
    flag: str | None = None
    skipped: int = 0  # records the output already holds


def _plan(row: InputRow, tasks, taskset, done) -> _RowPlan:
    plan = _RowPlan(row, row.text, list(tasks), flag=row.flag)
    if taskset is not None and plan.flag is None:
        found = taskset.detect(row.text)
        if found is None:
            plan.flag = "not an IMHI query of a known task"
        else:
            task, form, plan.post = found
            plan.todo = [task] if not tasks or task in tasks else []
            plan.gold = task.parse_answer(row.gold, form) if row.gold is not None else None
    names = [t.name for t in plan.todo] or (["-"] if plan.flag else [])
    plan.skipped = sum((row.id, name) in done for name in names)
    plan.todo = [t for t in plan.todo if (row.id, t.name) not in done]
    return plan


def _records(analyzer, plan: _RowPlan, results, run):
    row = plan.row
    if results is None and plan.flag is not None:
        if not plan.todo:  # an unreadable IMHI row: one record, named by its flag only
            if not plan.skipped:
                yield _record(row.id, TaskResult("-", "-", None, None, None, flags=[plan.flag]), None, None, run)
            return
        results = [TaskResult(t.name, analyzer.form(t), None, None, None, flags=[plan.flag]) for t in plan.todo]
    for task, result in zip(plan.todo, results or []):
        yield _record(row.id, result, task, plan.gold, run)


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
