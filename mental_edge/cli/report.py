"""`mental-edge report`: one self-contained HTML page for analyze or eval outputs (one run, or several compared)."""

import click

from mental_edge.api.evaluate import write_report
from mental_edge.cli import main
from mental_edge.report.charts import require
from mental_edge.report.stats import RESAMPLES, SEED


@main.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The page to write (.html).")
@click.option("--include-text", is_flag=True, help="Show the posts next to their explanations (read from --data).")
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The input the run read (.csv/.jsonl/.txt), matched by id: for --include-text and --gold-column.",
)
@click.option(
    "--gold-column",
    default=None,
    help="Gold labels from this column (of --data if given, else of the records). IMHI records carry `gold`.",
)
@click.option("--id-column", default=None, help="The id column of --data, as given to analyze.")
@click.option("--resamples", type=click.IntRange(min=100), default=RESAMPLES, show_default=True)
@click.option("--seed", type=int, default=SEED, show_default=True, help="Seed of the bootstrap resampling.")
def report_command(results, output, include_text, data_path, gold_column, id_column, resamples, seed):
    """Write one HTML page for RESULTS (records .jsonl/.csv, or eval .json); two or more runs are compared.

    Figures, intervals and calibration are computed here; nothing is fetched or sent. Post text appears only
    with --include-text.
    """
    require()  # one line naming the extra before any work
    size = write_report(
        results,
        output,
        data=data_path,
        include_text=include_text,
        gold_column=gold_column,
        id_column=id_column,
        resamples=resamples,
        seed=seed,
    )
    click.echo(f"report written to {output} ({size / 1e6:.2f} MB)", err=True)
