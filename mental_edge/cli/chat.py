"""`mental-edge chat`: a terminal session with a model of the store."""

from pathlib import Path

import click

from mental_edge.api.model import load
from mental_edge.cli import main
from mental_edge.cli.options import model_options


@main.command("chat")
@click.option("--task", default=None, help="Start in analysis mode for TASK (a task, a family or 'all').")
@click.option("--system", default=None, help="System prompt (default: the model template's own).")
@click.option(
    "--country",
    default=None,
    envvar="MENTAL_EDGE_COUNTRY",
    help="Two-letter country code for the crisis-help lines (e.g. US, GB, IN); also $MENTAL_EDGE_COUNTRY.",
)
@click.option("--no-history", is_flag=True, help="Keep no input history on disk ($MENTAL_EDGE_HOME/chat_history).")
@model_options(slots=False)
def chat_command(task, system, country, no_history, model_opts):
    """Talk to a model, or analyse posts one by one (/task), in the terminal."""
    from mental_edge.chat.session import chat

    model = model_opts["model"]
    click.echo(f"Loading {Path(model).name if model else 'the store model'} ...", err=True)

    def opener():
        return load(**model_opts, sequential=True).engine  # a conversation is one sequence

    chat(opener, task=task, system=system, country=country, history=not no_history)
