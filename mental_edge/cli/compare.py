"""`mental-edge compare`: how two eval reports of the same data differ (say Q8_0 and Q4_K_M)."""

import click

from mental_edge.cli import main
from mental_edge.report.eval_report import compare_reports, load_report, render_comparison


@main.command("compare")
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.option("--markdown", is_flag=True, help="Print a Markdown table instead of a plain one.")
def compare_command(before, after, markdown):
    """Per-task deltas (AFTER minus BEFORE) and the share of rows whose label changed."""
    comparison = compare_reports(load_report(before), load_report(after))
    click.echo(render_comparison(comparison, markdown=markdown), nl=False)
