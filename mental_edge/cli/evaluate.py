"""`mental-edge eval`: score a model on IMHI-format data, as the benchmark does."""

from __future__ import annotations

import click

from mental_edge.api.evaluate import count_rows, evaluate
from mental_edge.api.model import load
from mental_edge.cli import main
from mental_edge.cli.options import analysis_options, model_options, progress_bar, sampling_options, say
from mental_edge.io.lock import hold_output


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
def eval_command(data_path, limit, explain, report_stem, analysis, prompts_dir, sampling, model_opts):
    """Score a model on IMHI-format data: accuracy, weighted F1 (the published metric), macro F1, unparsed."""
    with hold_output(report_stem):  # one run writes a report's files at a time
        with (
            load(**model_opts, prompts=prompts_dir, say=say) as model,
            progress_bar(count_rows(data_path, limit)) as bar,
        ):
            report = evaluate(
                model, data_path, limit=limit, explain=explain, sampling=sampling, on_row=bar.update, **analysis
            )
        paths = report.save(report_stem, say=say)
    click.echo(report.table())
    say(f"report written to {paths[0]} and {paths[1]}")
    if len(paths) > 2:
        say(f"page written to {paths[2]}")
