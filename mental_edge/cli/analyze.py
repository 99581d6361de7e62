"""`mental-edge analyze`: label posts for mental-health tasks, with probabilities and an explanation."""

from __future__ import annotations

import sys

import click

from mental_edge.api.jobs import Input, Job, run_job
from mental_edge.cli import main
from mental_edge.cli.options import analysis_options, model_options, progress_bar, sampling_options, say
from mental_edge.errors import MentalEdgeError


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
@click.option(
    "--ray-allow-unauthenticated",
    "ray_unauthenticated",
    is_flag=True,
    help="Send the posts to a Ray cluster that does not enforce token authentication (recorded in run.ray.auth).",
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
    ray_unauthenticated,
    analysis,
    prompts_dir,
    sampling,
    model_opts,
):
    """Label posts for mental-health tasks, with probabilities and an explanation.

    The post comes from TEXT, --input FILE, or stdin (one post a line). For non-clinical research only.
    """
    if text is None and input_path is None and sys.stdin.isatty():
        raise MentalEdgeError("give a post as TEXT, a file with --input, or posts on stdin")
    settings = {**analysis, "explain": not no_explain, "sampling": sampling}
    ray = {"ray": ray_address, "ray_workers": ray_workers, "ray_allow_unauthenticated": ray_unauthenticated}
    job = Job(model_opts, task_names, settings, prompts=prompts_dir, **ray)
    source = Input(text, input_path, text_column=text_column, id_column=id_column)
    done = run_job(
        job, source, output=output, resume=resume, limit=limit, write=print_record, progress=progress_bar, say=say
    )
    if output:
        s = done.summary
        say(f"{s.records} records written to {output} ({s.flagged} flagged, {s.skipped} already there)")
    if done.cluster:
        say(done.cluster)


def print_record(record: dict) -> None:
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
