"""`mental-edge analyze`, `eval` and `generate`: the analysis runtime from the command line."""

from __future__ import annotations

import functools
import sys
from contextlib import ExitStack, nullcontext
from pathlib import Path

import click

from mental_edge.analysis import DEFAULT_MAX_TOKENS, Analyzer
from mental_edge.analysis.runner import FIELDS, run_analysis
from mental_edge.cli import main
from mental_edge.cli.common import model_options, open_engine, sampling_options
from mental_edge.distributed import RayAnalysis, model_spec
from mental_edge.engine import PromptText, Segment
from mental_edge.errors import MentalEdgeError
from mental_edge.families import family_for
from mental_edge.io.lock import hold_output
from mental_edge.io.readers import input_files, is_imhi_file, read_file, read_input
from mental_edge.io.records import RecordWriter
from mental_edge.report.eval_report import build_report, render_table, save_report
from mental_edge.report.html import write_page
from mental_edge.report.runs import load_run
from mental_edge.tasks import load_tasks
from mental_edge.tasks.prompt_format import FORMATS


def analysis_options(func):
    for option in reversed(
        [
            click.option(
                "--max-tokens",
                type=click.IntRange(min=1),
                default=DEFAULT_MAX_TOKENS,
                show_default=True,
                help="Most tokens of explanation (or of a free answer).",
            ),
            click.option(
                "--free", is_flag=True, help="Let the model answer freely (the published way) and parse its label."
            ),
            click.option(
                "--prompts",
                "prompts_dir",
                type=click.Path(file_okay=False),
                default=None,
                help="Folder of task files and templates adding to or overriding the package's.",
            ),
            click.option(
                "--format",
                "prompt_format",
                type=click.Choice(list(FORMATS)),
                default=None,
                help="How the query is wrapped (default: the model family's).",
            ),
        ]
    ):
        func = option(func)
    return func


@main.command()
@click.argument("text", required=False)
@click.option(
    "--input",
    "-i",
    "input_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A .txt (one post a line), .csv, .jsonl or IMHI query file.",
)
@click.option("--task", "-t", "task_names", multiple=True, help="Task name, family or 'all' (repeatable).")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write records to FILE.jsonl or FILE.csv."
)
@click.option("--no-explain", is_flag=True, help="Stop after the label.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its output file.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Analyse at most N input rows.")
@click.option("--text-column", default=None, help="Column holding the post (.csv/.jsonl).")
@click.option("--id-column", default=None, help="Column holding the row id (.csv/.jsonl).")
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Spread the posts over a Ray cluster (auto, HOST:PORT, ray://HOST:PORT; 'local' starts one here).",
)
@click.option(
    "--ray-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Engines on the Ray cluster (default: one per node).",
)
@analysis_options
@sampling_options
@model_options
def analyze(
    text,
    input_path,
    task_names,
    output,
    no_explain,
    resume,
    limit,
    text_column,
    id_column,
    ray_address,
    ray_workers,
    max_tokens,
    free,
    prompts_dir,
    prompt_format,
    sampling,
    model_opts,
):
    """Label posts for mental-health tasks, with probabilities and an explanation.

    The post comes from TEXT, --input FILE, or stdin (one post a line). For non-clinical research only.
    """
    if text is None and input_path is None and sys.stdin.isatty():
        raise MentalEdgeError("give a post as TEXT, a file with --input, or posts on stdin")
    taskset = load_tasks(prompts_dir)
    imhi = input_path is not None and is_imhi_file(input_path)
    if not task_names and not imhi:
        raise MentalEdgeError("say which task with --task (e.g. --task DR, --task all)")
    if ray_workers and not ray_address:
        raise MentalEdgeError("--ray-workers needs --ray ADDRESS")
    settings = {
        "explain": not no_explain,
        "free": free,
        "max_tokens": max_tokens,
        "sampling": sampling,
        "prompt_format": prompt_format,
    }
    with ExitStack() as stack:
        if output:  # locked before the model loads: a second run on this output stops at once (io/lock.py)
            stack.enter_context(hold_output(output))
        cluster = None
        if ray_address:
            cluster = stack.enter_context(RayAnalysis(ray_address, model_spec(**model_opts), settings, ray_workers))
        if cluster:
            language, analyze_rows = cluster.language, cluster.run_analysis
        else:
            engine = open_engine(**model_opts)
            language = family_for(engine.info.architecture).language
            analyze_rows = functools.partial(run_analysis, Analyzer(engine, **settings))
        tasks = [t for name in task_names for t in taskset.get(name, language=language)]
        rows = read_input(text, input_path, text_column=text_column, id_column=id_column)
        total = _count_rows(input_path, text_column, id_column, limit)
        writer = RecordWriter(output, resume=resume, fields=FIELDS) if output else None
        with writer or nullcontext(), _progress(total, enabled=writer is not None) as bar:
            summary = analyze_rows(
                rows,
                tasks,
                taskset=taskset if imhi else None,
                done=writer.done if writer else set(),
                write=writer.write if writer else _print_record,
                limit=limit,
                on_row=bar.update if bar is not None else None,
            )
    if writer:
        click.echo(
            f"{summary.records} records written to {output} ({summary.flagged} flagged, "
            f"{summary.skipped} already there)",
            err=True,
        )
    if cluster:
        click.echo(cluster.report(), err=True)


@main.command("eval")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True),
    help="An IMHI-format CSV file, or a folder of them (task inferred from each query).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N rows of each file.")
@click.option("--explain", is_flag=True, help="Also generate explanations (slower; labels do not depend on it).")
@click.option(
    "--report",
    "report_stem",
    default="eval-report",
    show_default=True,
    help="Write the report to STEM.json, STEM.md and STEM.html (the page needs the `report` extra).",
)
@analysis_options
@sampling_options
@model_options
def eval_command(
    data_path, limit, explain, report_stem, max_tokens, free, prompts_dir, prompt_format, sampling, model_opts
):
    """Score a model on IMHI-format data: accuracy, weighted F1 (the published metric), macro F1, unparsed."""
    taskset = load_tasks(prompts_dir)
    with hold_output(report_stem):  # one run writes a report's files at a time
        _eval(data_path, limit, explain, report_stem, max_tokens, free, prompt_format, sampling, model_opts, taskset)


def _eval(data_path, limit, explain, report_stem, max_tokens, free, prompt_format, sampling, model_opts, taskset):
    engine = open_engine(**model_opts)
    analyzer = Analyzer(
        engine, explain=explain, free=free, max_tokens=max_tokens, sampling=sampling, prompt_format=prompt_format
    )
    by_task: dict[str, list[dict]] = {}
    files = input_files(data_path)
    with _progress(sum(_count_rows(f, None, None, limit) for f in files), enabled=True) as bar:
        for path in files:
            summary = run_analysis(analyzer, read_file(path), [], taskset=taskset, limit=limit, on_row=bar.update)
            for task, rows in summary.by_task.items():
                by_task.setdefault(task, []).extend(r for r in rows if r["gold"] is not None)
    labels = {name: taskset.task(name).labels for name in by_task if name != "-"}
    by_task.pop("-", None)
    report = build_report(by_task, labels_by_task=labels, run=analyzer.run_info(), data=str(data_path))
    json_path, md_path = save_report(report, report_stem)
    click.echo(render_table(report))
    click.echo(f"report written to {json_path} and {md_path}", err=True)
    try:
        write_page([load_run(json_path)], f"{report_stem}.html")
        click.echo(f"page written to {report_stem}.html", err=True)
    except MentalEdgeError as exc:  # matplotlib missing, say: the JSON and Markdown reports stand
        click.echo(f"{report_stem}.html not written: {exc}", err=True)


@main.command()
@click.argument("prompt")
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@sampling_options
@model_options(slots=False)
def generate(prompt, max_tokens, sampling, model_opts):
    """Print the model's raw continuation of PROMPT (BOS as the model file says, no template)."""
    engine = open_engine(**model_opts)
    tokens = engine.encode(PromptText((Segment(prompt),)))  # framed as the model takes it (T5: the closing </s>)
    for piece in engine.generate(tokens, max_tokens=max_tokens, sampling=sampling):
        click.echo(piece, nl=False)
    click.echo()


def _print_record(record: dict) -> None:
    """A readable line (and explanation) per record, for a terminal."""
    head = f"[{record['id']}] {record['task']}: "
    if record["label"] is None:
        click.echo(head + "no label (" + "; ".join(record["flags"]) + ")")
        return
    probs = record["probabilities"]
    detail = ", ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1])) if probs else ""
    flags = f"  [{'; '.join(record['flags'])}]" if record["flags"] else ""
    click.echo(head + click.style(record["label"], bold=True) + (f"  ({detail})" if detail else "") + flags)
    if record["explanation"]:
        click.echo(click.wrap_text(record["explanation"], initial_indent="    ", subsequent_indent="    "))


def _count_rows(path, text_column, id_column, limit) -> int | None:
    """Rows of an input file, for the progress bar's ETA (None for stdin or a text argument)."""
    if path is None:
        return None
    count = sum(1 for _ in read_file(Path(path), text_column=text_column, id_column=id_column))
    return min(count, limit) if limit else count


def _progress(total: int | None, enabled: bool):
    """A progress bar with rate and ETA on stderr (only on a terminal)."""
    if not enabled:
        return nullcontext()
    from tqdm import tqdm

    return tqdm(total=total, unit="post", file=sys.stderr, disable=None, dynamic_ncols=True)
