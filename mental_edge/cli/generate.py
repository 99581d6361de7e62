"""`mental-edge generate`: a model's raw continuation of a prompt."""

from __future__ import annotations

import click

from mental_edge.api.model import load
from mental_edge.cli import main
from mental_edge.cli.options import model_options, sampling_options, say


@main.command()
@click.argument("prompt")
@click.option("--max-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@sampling_options
@model_options(slots=False)
def generate(prompt, max_tokens, sampling, model_opts):
    """Print the model's raw continuation of PROMPT (BOS as the model file says, no template)."""
    with load(**model_opts, say=say) as model:
        for piece in model.generate(prompt, max_tokens=max_tokens, sampling=sampling, stream=True):
            click.echo(piece, nl=False)
    click.echo()
