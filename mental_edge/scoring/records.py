"""Records scored against their data's reference explanations: the `explanations` part of a report.

`score_records` scores an existing records file (analyze's .jsonl/.csv, or eval's rows) without running the
analysis model again and returns an eval-shaped report (label figures from the records' gold labels, as eval
computes them) with an `explanations` part; `add_explanation_scores` is the one call eval makes. The part:

    {"scorer": {...}, "data": "...", "reference_sets": {"gold": "...", "expert": "<folder>" | None},
     "tasks": {"DR": {"gold": <summary>, "expert": <summary, rows the expert set also explains>}},
     "rows": {"DR": [{"id", "bart_score", "rouge1", "rouge2", "rougeL", "bleu", "bleu_stats", "expert": {...}}]},
     "empty": {"DR": 0}}

(a summary: report.explanations.summarize). The candidate of a row is the record's explanation, stripped; an empty
one is scored as empty text (the model gave none) and counted in `empty`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import TaskSet
from mental_edge.report.eval_report import build_report
from mental_edge.report.explanations import summarize
from mental_edge.report.runs import load_run
from mental_edge.report.stats import RESAMPLES, SEED
from mental_edge.scoring.classify import Classifiers, consistency
from mental_edge.scoring.references import EXPERT, References, load_references
from mental_edge.scoring.scorer import ExplanationScorer

GOLD_SET = "the gold answers' text after 'Reasoning:' (ChatGPT-written, checked)"
EXPERT_SET = "the expert-written explanations"


def score_records(
    records,
    data,
    scorer: str | Path,
    taskset: TaskSet,
    *,
    threads: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    on_progress: Callable[[int, int], None] | None = None,
    classifiers: Classifiers | None = None,
    compute_type: str = "default",
) -> dict:
    """The report of a records file: its label figures and its explanations scored against `data`'s references."""
    run = load_run(records)
    rows = {task: task_rows for task, task_rows in run.tasks.items() if task != "-"}
    if not any(r.explanation for task_rows in rows.values() for r in task_rows):
        raise MentalEdgeError(f"{records}: no record has an explanation (analyze without --no-explain, eval --explain)")
    labels = {task: taskset.task(task).labels for task in rows if task in taskset.names()}
    by_task = {task: [_row(r) for r in task_rows] for task, task_rows in rows.items()}
    gold_rows = {task: [r for r in task_rows if r["gold"] is not None] for task, task_rows in by_task.items()}
    try:
        report = build_report({t: r for t, r in gold_rows.items() if r}, labels_by_task=labels, run=run.settings,
                              data=str(data))  # fmt: skip
    except ValueError as exc:  # a label the task does not have
        raise MentalEdgeError(f"{records}: {exc}") from None
    report["records"] = str(records)
    return add_explanation_scores(report, by_task, data, scorer, taskset, where=str(records), threads=threads,
                                  resamples=resamples, seed=seed, on_progress=on_progress,
                                  classifiers=classifiers, compute_type=compute_type)  # fmt: skip


def _row(row) -> dict:
    return {"id": row.id, "gold": row.gold, "pred": row.label, "probabilities": row.probabilities,
            "explanation": row.explanation}  # fmt: skip


def add_explanation_scores(
    report: dict,
    rows_by_task: Mapping[str, Sequence[Mapping]],
    data,
    scorer: str | Path,
    taskset: TaskSet,
    *,
    where: str = "the run",
    threads: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    on_progress: Callable[[int, int], None] | None = None,
    classifiers: Classifiers | None = None,
    compute_type: str = "default",
) -> dict:
    """`report` with its `explanations` part: each row ({"id", "explanation"}) of each task scored against its
    reference in `data`; a row the data does not hold stops with one line (`where` names the run). With
    `classifiers`, each task that has one also gets `consistency`: how often the explanation's label by the
    published classifier is the row's label ({"pred"})."""
    refs = load_references(data, taskset)
    pairs, places = _pairs(rows_by_task, refs, where)
    if not pairs:
        raise MentalEdgeError(f"{where}: no row has a reference explanation in {data}")
    engine = ExplanationScorer(scorer, threads=threads, compute_type=compute_type)
    try:
        scores = engine.score(pairs, on_progress)
    finally:
        engine.close()
    rows: dict[str, list[dict]] = {}
    for (task, row_id, kind), values in zip(places, scores):
        if kind == EXPERT:
            rows[task][-1][EXPERT] = values
        else:
            rows.setdefault(task, []).append({"id": row_id, **values})
    tasks = {}
    for task, task_rows in rows.items():
        tasks[task] = {refs.name: summarize(task_rows, resamples=resamples, seed=seed)}
        expert = [r[EXPERT] for r in task_rows if EXPERT in r]
        if expert:
            tasks[task][EXPERT] = summarize(expert, resamples=resamples, seed=seed)
        if classifiers is not None:
            _add_consistency(tasks[task], task_rows, rows_by_task[task], task, classifiers, resamples, seed)
    empty = {task: sum(not (r.get("explanation") or "").strip() for r in task_rows if (task, str(r["id"])) in refs.rows)
             for task, task_rows in rows_by_task.items() if task in rows}  # fmt: skip
    report["explanations"] = {
        "scorer": engine.info,
        "data": str(data),
        "reference_sets": {
            refs.name: EXPERT_SET if refs.name == EXPERT else GOLD_SET,
            EXPERT: str(refs.expert_folder) if refs.expert_folder else None,
        },  # fmt: skip
        "tasks": tasks,
        "rows": rows,
        "empty": empty,
    }
    return report


def _add_consistency(figures: dict, scored: list[dict], rows, task, classifiers: Classifiers, resamples, seed) -> None:
    by_id = {str(r["id"]): r for r in rows}
    judged = [by_id[r["id"]] for r in scored]
    figure, labels = consistency(judged, task, classifiers, resamples=resamples, seed=seed)
    if figure is not None:
        figures["consistency"] = figure
        for row, label in zip(scored, labels):
            row["explanation_label"] = label


def _pairs(rows_by_task, refs: References, where: str) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(candidate, reference) pairs and where each belongs: (task, row id, "gold" | "expert")."""
    pairs, places = [], []
    for task, task_rows in rows_by_task.items():
        if task == "-":
            continue
        for row in task_rows:
            key = (task, str(row["id"]))
            if key not in refs.rows:
                raise MentalEdgeError(
                    f"{where}: row {key[1]} of task {task} is not in {refs.data} (score records against their data)"
                )
            reference = refs.rows[key]
            if reference is None:
                continue
            candidate = (row.get("explanation") or "").strip()
            pairs.append((candidate, reference))
            places.append((task, key[1], refs.name))
            if key in refs.expert:
                pairs.append((candidate, refs.expert[key]))
                places.append((task, key[1], EXPERT))
    return pairs, places
