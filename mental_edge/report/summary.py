"""What a report page shows, as plain data: per-task figures of one run, and run-vs-run comparisons.

No HTML and no plotting here (html.py and charts.py draw this), so every figure on the page can be
checked in a test without a browser. Notes (a task without gold labels, a single gold class, runs over
different rows) are part of the data: the page states them instead of failing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mental_edge.report import explanations
from mental_edge.report.metrics import UNPARSED, present_labels, score
from mental_edge.report.runs import Row, Run
from mental_edge.report.stats import RESAMPLES, SEED, bootstrap, calibration, chosen_probability, paired_bootstrap

EXPLANATIONS_PER_LABEL = 3
IDS_SHOWN = 200  # row ids listed per group before "and N more"


@dataclass
class TaskSummary:
    task: str
    rows: int
    label_counts: dict[str, int]  # label (UNPARSED for none) -> rows
    chosen: list[float]  # the chosen label's probability, rows that have one
    flagged: dict[str, list[str]]  # "unparsed" / "truncated" / other flags -> row ids
    examples: dict[str, list[Row]]  # label -> a few rows with an explanation
    template_hashes: list[str]
    gold: dict | None = None  # metrics, intervals, confusion and calibration where rows carry gold
    notes: list[str] = field(default_factory=list)
    explanations: dict | None = None  # reference set -> explanations.summarize's figures (a scored report)
    reference_sets: dict | None = None  # reference set -> what it is
    bart_scores: list[float] = field(default_factory=list)  # per row, against the gold references


@dataclass
class Comparison:
    before: str
    after: str
    task: str
    shared: int
    only_before: int
    only_after: int
    agreement: float | None
    changed_ids: list[str]
    probability_change: dict | None  # mean, largest and the row of the largest
    deltas: dict | None  # paired intervals per metric (rows with gold)
    notes: list[str] = field(default_factory=list)
    explanation_deltas: dict | None = None  # explanations.paired over the rows both runs scored


def summarise_run(run: Run, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, TaskSummary]:
    summaries = {task: summarise_task(task, rows, resamples=resamples, seed=seed) for task, rows in run.tasks.items()}
    part = run.explanations or {}
    for task, summary in summaries.items():
        if task in (part.get("tasks") or {}):
            summary.explanations = part["tasks"][task]
            summary.reference_sets = part.get("reference_sets")
            summary.bart_scores = [r.scores["bart_score"] for r in run.tasks[task] if r.scores]
    return summaries


def summarise_task(task: str, rows: list[Row], *, resamples: int = RESAMPLES, seed: int = SEED) -> TaskSummary:
    counts = Counter(UNPARSED if r.label is None else r.label for r in rows)
    chosen = [p for p in (chosen_probability(r.label, r.probabilities) for r in rows) if p is not None]
    summary = TaskSummary(
        task=task,
        rows=len(rows),
        label_counts=dict(sorted(counts.items(), key=lambda kv: (kv[0] == UNPARSED, -kv[1], kv[0]))),
        chosen=chosen,
        flagged=_flagged(rows),
        examples=_examples(rows),
        template_hashes=sorted({r.template_sha256 for r in rows if r.template_sha256}),
    )
    if task == "-":
        summary.notes.append("rows no task could take (not an IMHI query of a known task, or unreadable)")
        return summary
    summary.gold = _gold_figures(rows, summary.notes, resamples, seed)
    return summary


def compare_runs(
    before: Run, after: Run, *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[list[Comparison], list[str]]:
    """Per-task comparisons over the rows both runs hold, and notes on tasks only one run has."""
    notes = [f"task {t} is only in {r.name}" for r, o in ((before, after), (after, before)) for t in r.tasks
             if t not in o.tasks and t != "-"]  # fmt: skip
    shared_tasks = [t for t in before.tasks if t in after.tasks and t != "-"]
    return [_compare_task(before, after, t, resamples, seed) for t in shared_tasks], notes


def _flagged(rows: list[Row]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for row in rows:
        kinds = set(row.flags) or ({"unparsed"} if row.label is None else set())
        for kind in sorted(kinds):
            groups.setdefault(kind, []).append(row.id)
    order = {"unparsed": 0, "truncated": 1}
    return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], 2), kv[0])))


def _examples(rows: list[Row]) -> dict[str, list[Row]]:
    examples: dict[str, list[Row]] = {}
    for row in rows:
        if row.label is not None and row.explanation:
            chosen = examples.setdefault(row.label, [])
            if len(chosen) < EXPLANATIONS_PER_LABEL:
                chosen.append(row)
    return dict(sorted(examples.items()))


def _gold_figures(rows: list[Row], notes: list[str], resamples: int, seed: int) -> dict | None:
    scored = [r for r in rows if r.gold is not None]
    if not scored:
        notes.append("no gold labels: accuracy, F1 and calibration need them (IMHI files carry them; --gold-column)")
        return None
    if len(scored) < len(rows):
        notes.append(f"{len(rows) - len(scored)} of {len(rows)} rows have no gold label and are left out of the scores")
    gold, pred = [r.gold for r in scored], [r.label for r in scored]
    classes = sorted(set(gold))
    if len(classes) == 1:
        notes.append(f"every gold label is {classes[0]!r}: F1 and its intervals say little about a one-class task")
    labels = present_labels(gold, pred)
    figures = score(gold, pred, labels)
    return {
        "rows": len(scored),
        "scores": figures.as_dict(),
        "intervals": {k: v.as_dict() for k, v in bootstrap(gold, pred, labels, resamples=resamples, seed=seed).items()},
        "resamples": resamples,
        "seed": seed,
        "calibration": calibration(gold, pred, [r.probabilities for r in scored]),
    }


def _compare_task(before: Run, after: Run, task: str, resamples: int, seed: int) -> Comparison:
    a, b = _by_id(before.tasks[task]), _by_id(after.tasks[task])
    shared = [i for i in a if i in b]
    notes = []
    if len(shared) < max(len(a), len(b)):
        notes.append(
            f"the runs share {len(shared)} of their rows ({len(a)} in {before.name}, {len(b)} in {after.name}); "
            "only the shared rows are compared"
        )
    changed = [i for i in shared if a[i].label != b[i].label]
    return Comparison(
        before=before.name,
        after=after.name,
        task=task,
        shared=len(shared),
        only_before=len(a) - len(shared),
        only_after=len(b) - len(shared),
        agreement=1 - len(changed) / len(shared) if shared else None,
        changed_ids=changed,
        probability_change=_probability_change(a, b, shared),
        deltas=_paired(a, b, shared, notes, resamples, seed),
        notes=notes,
        explanation_deltas=_explanation_deltas(a, b, shared, resamples, seed),
    )


def _explanation_deltas(a: dict[str, Row], b: dict[str, Row], shared: list[str], resamples: int, seed: int):
    scored = [i for i in shared if a[i].scores and b[i].scores]
    if not scored:
        return None
    return explanations.paired([{"id": i, **a[i].scores} for i in scored], [{"id": i, **b[i].scores} for i in scored],
                               resamples=resamples, seed=seed)  # fmt: skip


def _by_id(rows: list[Row]) -> dict[str, Row]:
    """Rows by id; a repeated id keeps its first row."""
    out: dict[str, Row] = {}
    for row in rows:
        out.setdefault(row.id, row)
    return out


def _probability_change(a: dict[str, Row], b: dict[str, Row], shared: list[str]) -> dict | None:
    """Per row, the largest change of any label's probability; its mean and maximum over the rows."""
    changes = []
    for i in shared:
        pa, pb = a[i].probabilities, b[i].probabilities
        if pa and pb:
            changes.append((max(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in set(pa) | set(pb)), i))
    if not changes:
        return None
    largest = max(changes)
    return {"rows": len(changes), "mean": sum(c for c, _ in changes) / len(changes), "max": largest[0],
            "max_id": largest[1]}  # fmt: skip


def _paired(a, b, shared, notes, resamples, seed) -> dict | None:
    scored = [i for i in shared if a[i].gold is not None]
    if not scored:
        notes.append("no gold labels on the shared rows: no metric deltas")
        return None
    if any(a[i].gold != b[i].gold for i in scored if b[i].gold is not None):
        notes.append("the runs disagree on some gold labels; the first run's are used")
    gold = [a[i].gold for i in scored]
    intervals = paired_bootstrap(gold, [a[i].label for i in scored], [b[i].label for i in scored],
                                 resamples=resamples, seed=seed)  # fmt: skip
    return {"rows": len(scored), "resamples": resamples, "seed": seed,
            "intervals": {k: v.as_dict() for k, v in intervals.items()}}  # fmt: skip
