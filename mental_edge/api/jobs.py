"""An analysis from an input (a text, a file, stdin) to an output file or a printer: what `mental-edge analyze`
runs, resumable, on this machine or spread over a Ray cluster.

The output is locked before the model loads (a second run on it stops at once: io/lock.py), records already in a
resumed output are skipped, and each record is written whole as it is made (io/records.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mental_edge.analysis.runner import FIELDS, RunSummary
from mental_edge.api.loading import Say
from mental_edge.api.model import load
from mental_edge.distributed import RayAnalysis, model_spec
from mental_edge.errors import MentalEdgeError
from mental_edge.families import family_for
from mental_edge.io.lock import hold_output
from mental_edge.io.readers import InputRow, is_imhi_file, read_file, read_input
from mental_edge.io.records import RecordWriter
from mental_edge.prompting import Task, TaskSet, load_tasks


@dataclass(frozen=True)
class Input:
    """Where the posts come from: `text` (one post), `path` (.txt, .csv, .jsonl or an IMHI query file), else
    stdin; `text_column` and `id_column` for .csv/.jsonl."""

    text: str | None = None
    path: str | Path | None = None
    text_column: str | None = None
    id_column: str | None = None

    def imhi(self) -> bool:
        return self.path is not None and is_imhi_file(self.path)

    def count(self, limit: int | None) -> int | None:
        """The rows of an input file, for a progress bar's ETA (None for stdin or a text)."""
        if self.path is None:
            return None
        n = sum(1 for _ in read_file(Path(self.path), text_column=self.text_column, id_column=self.id_column))
        return min(n, limit) if limit else n


@dataclass
class JobSummary:
    summary: RunSummary
    cluster: str | None = None  # where a Ray run went (RayAnalysis.report)


@dataclass(frozen=True)
class Job:
    """One analysis run: the model (`load`'s keywords), the task names, the analysis settings (Model.iter_rows'
    keywords: explain, max_tokens, free, sampling, prompt_format) and where it runs (`ray`: a cluster address;
    `ray_allow_unauthenticated`: also one that does not enforce Ray's token authentication, see docs/ray.md)."""

    model: dict[str, Any]
    tasks: Sequence[str] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    prompts: str | Path | None = None
    ray: str | None = None
    ray_workers: int | None = None
    ray_allow_unauthenticated: bool = False


def run_job(
    job: Job,
    source: Input,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    limit: int | None = None,
    write: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int | None], Any] | None = None,
    say: Say | None = None,
) -> JobSummary:
    """Analyse `source` for the job's tasks into `output` (.jsonl or .csv; `resume` continues it), or give each
    record to `write`. `progress(total)` makes a bar with an `update()` per row (a context manager)."""
    taskset = load_tasks(job.prompts)
    imhi = source.imhi()
    if not job.tasks and not imhi:
        raise MentalEdgeError("say which task with --task (e.g. --task DR, --task all)")
    if job.ray_workers and not job.ray:
        raise MentalEdgeError("--ray-workers needs --ray ADDRESS")
    if job.ray_allow_unauthenticated and not job.ray:
        raise MentalEdgeError("--ray-allow-unauthenticated needs --ray ADDRESS")
    with ExitStack() as stack:
        if output:  # locked before the model loads: a second run on this output stops at once
            stack.enter_context(hold_output(output))
        # the input's errors (a missing column, say) come before the model is loaded
        rows = read_input(source.text, source.path, text_column=source.text_column, id_column=source.id_column)
        if job.ray:
            run = _on_ray(job, job.ray, stack)
        else:
            run = _here(job, stack, say)
        tasks = [t for name in job.tasks for t in taskset.get(name, language=run.language)]
        writer = RecordWriter(output, resume=resume, fields=FIELDS) if output else None
        bar_cm = progress(source.count(limit)) if progress and writer else nullcontext()
        with writer or nullcontext(), bar_cm as bar:
            summary = run.analyze(
                rows,
                tasks,
                taskset=taskset if imhi else None,
                done=writer.done if writer else set(),
                write=writer.write if writer else (write or (lambda record: None)),
                limit=limit,
                on_row=bar.update if bar is not None else None,
            )
        return JobSummary(summary, run.report())


@dataclass
class _Run:
    language: str
    analyze: Callable[..., RunSummary]
    report: Callable[[], str | None]


def _here(job: Job, stack: ExitStack, say: Say | None) -> _Run:
    model = stack.enter_context(load(**job.model, prompts=job.prompts, say=say))
    language = family_for(model.info.architecture).language

    def analyze(
        rows: Iterable[InputRow],
        tasks: Sequence[Task],
        *,
        taskset: TaskSet | None,
        done: AbstractSet[tuple[str, str]],
        write: Callable[[dict[str, Any]], None],
        limit: int | None,
        on_row: Callable[[], None] | None,
    ) -> RunSummary:
        summary = RunSummary()
        for record in model.iter_rows(
            rows,
            tasks,
            taskset=taskset,
            done=done,
            limit=limit,
            on_row=on_row,
            summary=summary,
            **job.settings,
        ):
            written = record.to_dict()
            write(written)
            summary.count(written)
        return summary

    return _Run(language, analyze, lambda: None)


def _on_ray(job: Job, address: str, stack: ExitStack) -> _Run:
    options = dict(job.model)
    spec = model_spec(
        options.pop("model", None),
        n_ctx=options.pop("ctx", None),
        slots=1 if options.pop("sequential", False) else options.pop("slots", None),
        **options,
    )
    allow = job.ray_allow_unauthenticated
    cluster = stack.enter_context(
        RayAnalysis(address, spec, job.settings, job.ray_workers, allow_unauthenticated=allow)
    )
    return _Run(cluster.language, cluster.run_analysis, cluster.report)
