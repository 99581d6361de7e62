"""`mental-edge doctor`: report what this installation can do."""

from __future__ import annotations

import json

import click

from mental_edge.cli import main
from mental_edge.doctor import diagnose, render


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json):
    """Show llama.cpp's backends and CPU features, GPU offload, threads, the model store and optional engines."""
    report = diagnose()
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
