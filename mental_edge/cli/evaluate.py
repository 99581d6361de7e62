"""`mental-edge eval`: score a model on IMHI-format data, as the benchmark does."""

from __future__ import annotations

import click

from mental_edge.api.evaluate import count_rows, evaluate
from mental_edge.api.model import load
from mental_edge.cli import main
from mental_edge.cli.options import analysis_options, model_options, progress_bar, sampling_options, say
from mental_edge.cli.score import pairs_progress, scorer_options, scorer_settings
from mental_edge.errors import MentalEdgeError
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
@scorer_options
@analysis_options
@sampling_options
@model_options
def eval_command(
    data_path,
    limit,
    explain,
    report_stem,
    scorer,
    scorer_weights,
    scorer_compute,
    classifiers_dir,
    analysis,
    prompts_dir,
    sampling,
    model_opts,
):
    """Score a model on IMHI-format data: accuracy, weighted F1 (the published metric), macro F1, unparsed; with
    --explain --scorer, its explanations too (BARTScore, ROUGE, BLEU: docs/explanations.md)."""
    if scorer and not explain:
        raise MentalEdgeError("--scorer scores explanations: add --explain")
    if classifiers_dir and not (analysis["free"] or scorer):
        raise MentalEdgeError("--classifiers labels free answers (--free) or judges explanations (--explain --scorer)")
    scoring = scorer_settings(scorer, scorer_weights, scorer_compute, classifiers_dir, prompts_dir, model_opts)
    with hold_output(report_stem):  # one run writes a report's files at a time
        with (
            load(**model_opts, prompts=prompts_dir, say=say) as model,
            progress_bar(count_rows(data_path, limit)) as bar,
        ):
            report = evaluate(
                model, data_path, limit=limit, explain=explain, sampling=sampling, on_row=bar.update, **analysis,
                **scoring, on_scored=pairs_progress() if scorer else None,
            )  # fmt: skip
        paths = report.save(report_stem, say=say)
    click.echo(report.table())
    say(f"report written to {paths[0]} and {paths[1]}")
    if len(paths) > 2:
        say(f"page written to {paths[2]}")
