"""IMHI evaluation as the benchmark scores it (accuracy, weighted F1, macro F1, unparsed answers, with bootstrap
intervals and calibration), and the HTML page over one or more runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mental_edge.analysis import DEFAULT_MAX_TOKENS
from mental_edge.analysis.runner import RunSummary
from mental_edge.api.loading import Say
from mental_edge.api.model import Model
from mental_edge.engine import Sampling
from mental_edge.errors import MentalEdgeError
from mental_edge.io.readers import input_files, read_file
from mental_edge.prompting import load_tasks
from mental_edge.report.eval_report import build_report, load_report, render_markdown, render_table, save_report
from mental_edge.report.html import write_page
from mental_edge.report.runs import Run, add_data, load_run
from mental_edge.report.stats import RESAMPLES, SEED
from mental_edge.scoring.classify import Classifiers, label_free_answers
from mental_edge.scoring.records import add_explanation_scores, score_records
from mental_edge.store.pull import scorer_folder


@dataclass(frozen=True)
class Report:
    """An evaluation report: `data` is the saved form, {"data", "run", "tasks": {task: figures}, "rows"}
    (report/eval_report.py describes it)."""

    data: dict[str, Any]

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Per task: n, accuracy, weighted_f1, macro_f1, unparsed, confusion, intervals, calibration."""
        tasks: dict[str, dict[str, Any]] = self.data["tasks"]
        return tasks

    def table(self) -> str:
        return render_table(self.data)

    def markdown(self) -> str:
        return render_markdown(self.data)

    def save(self, stem: str | Path, *, say: Say | None = None) -> list[Path]:
        """STEM.json and STEM.md, and STEM.html where the `report` extra (matplotlib) is installed (else `say`
        hears why not); each file whole or not at all."""
        json_path, md_path = save_report(self.data, stem)
        paths = [json_path, md_path]
        page = Path(f"{stem}.html")
        try:
            write_page([load_run(json_path)], page)
            paths.append(page)
        except MentalEdgeError as exc:  # matplotlib missing, say: the JSON and Markdown reports stand
            if say is not None:
                say(f"{page} not written: {exc}")
        return paths

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls(load_report(path))


def evaluate(
    model: Model,
    data: str | Path,
    *,
    limit: int | None = None,
    explain: bool = False,
    free: bool = False,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    sampling: Sampling | None = None,
    prompt_format: str | None = None,
    on_row: Callable[[], None] | None = None,
    scorer: str | Path | None = None,
    classifiers: Classifiers | None = None,
    scorer_compute: str = "default",
    on_scored: Callable[[int, int], None] | None = None,
) -> Report:
    """Score `model` on IMHI-format data: a CSV file or a folder of them (each row's task read from its query),
    at most `limit` rows a file. Labels do not depend on `explain`. With `scorer` (a converted BART scorer folder:
    store.pull.scorer_folder) the explanations are scored too (docs/explanations.md); `classifiers` (the published
    MentalBERT classifiers) label free answers and, with a scorer, judge label-explanation consistency."""
    summary = RunSummary()
    run_info: dict[str, Any] = {}
    for path in input_files(data):
        for record in model.iter_rows(
            read_file(path),
            taskset=model.taskset,
            limit=limit,
            on_row=on_row,
            explain=explain,
            free=free,
            max_tokens=max_tokens,
            sampling=sampling,
            prompt_format=prompt_format,
        ):
            summary.count(record.to_dict())
            run_info = record.run
    by_task = {task: [r for r in rows if r["gold"] is not None] for task, rows in summary.by_task.items()}
    by_task.pop("-", None)  # rows that were no IMHI query of a known task
    if free and classifiers is not None:
        label_free_answers(by_task, classifiers)  # as the benchmark labels free answers
    labels = {name: model.taskset.task(name).labels for name in by_task}
    report = build_report(by_task, labels_by_task=labels, run=run_info, data=str(data))
    if scorer is not None:
        add_explanation_scores(report, by_task, data, scorer, model.taskset, on_progress=on_scored,
                               classifiers=classifiers, compute_type=scorer_compute)  # fmt: skip
    return Report(report)


def score_explanations(
    records: str | Path,
    data: str | Path,
    scorer: str | Path,
    *,
    scorer_weights: str | Path | None = None,
    compute: str = "default",
    classifiers: str | Path | None = None,
    prompts: str | Path | None = None,
    threads: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    on_progress: Callable[[int, int], None] | None = None,
    say: Say | None = None,
) -> Report:
    """Score the explanations of a records file (`mental-edge analyze`'s .jsonl/.csv) against the references of
    the IMHI data it came from, with no analysis model: per task BARTScore, ROUGE-1/2/L and BLEU, each with a 95%
    bootstrap interval, against the gold answers' reasoning and the expert set where the data has it
    (docs/explanations.md). `scorer`: a store name (`pull bart-large-cnn`), a converted scorer folder, or a
    Hugging Face BART checkpoint folder (converted once and cached), with `scorer_weights` (BARTScore's
    bart_score.pth) applied on top; `compute`: "default" or "int8"; `classifiers`: the published MentalBERT
    classifiers' folder, for label-explanation consistency."""
    folder = scorer_folder(str(scorer), str(scorer_weights) if scorer_weights else None, say=say)
    taskset = load_tasks(prompts)
    judges = Classifiers(classifiers, taskset, threads=threads, say=say) if classifiers else None
    report = score_records(
        records,
        data,
        folder,
        taskset,
        threads=threads,
        resamples=resamples,
        seed=seed,
        on_progress=on_progress,
        classifiers=judges,
        compute_type=compute,
    )
    return Report(report)


def count_rows(data: str | Path, limit: int | None = None) -> int:
    """The rows `evaluate` reads (for a progress bar)."""
    return sum(min(sum(1 for _ in read_file(path)), limit or 10**12) for path in input_files(data))


def write_report(
    runs: Sequence[str | Path] | Iterable[Run],
    output: str | Path,
    *,
    data: str | Path | None = None,
    include_text: bool = False,
    gold_column: str | None = None,
    id_column: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> int:
    """One self-contained HTML page over runs (records .jsonl/.csv or eval reports .json); two or more are
    compared. `data`: the input the runs read, matched by id, for `include_text` (posts beside explanations) and
    `gold_column`. Returns the page's size in bytes."""
    if include_text and data is None:
        raise MentalEdgeError("--include-text reads the posts from the run's input: give it with --data FILE")
    loaded = [r if isinstance(r, Run) else load_run(r, gold_column=None if data else gold_column) for r in runs]
    if data is not None:
        add_data(loaded, data, text=include_text, gold_column=gold_column, id_column=id_column)
    return write_page(loaded, output, include_text=include_text, resamples=resamples, seed=seed)
