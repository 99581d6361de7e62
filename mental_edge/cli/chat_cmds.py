"""`mental-edge chat`: a terminal session with a model of the store."""

import click

from mental_edge.cli import main


@main.command("chat")
@click.option("--model", "model", default=None, help="Store name or GGUF path (default: the store's only/first model).")
@click.option("--task", default=None, help="Start in analysis mode for TASK (a task, a family or 'all').")
@click.option("--system", default=None, help="System prompt (default: the model template's own).")
@click.option(
    "--ctx", "n_ctx", type=click.IntRange(min=64), default=None, help="Context size in tokens (default 2048)."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all available).")
@click.option(
    "--country",
    default=None,
    envvar="MENTAL_EDGE_COUNTRY",
    help="Two-letter country code for the crisis-help lines (e.g. US, GB, IN); also $MENTAL_EDGE_COUNTRY.",
)
@click.option("--no-history", is_flag=True, help="Keep no input history on disk ($MENTAL_EDGE_HOME/chat_history).")
def chat_command(model, task, system, n_ctx, threads, country, no_history):
    """Talk to a model, or analyse posts one by one (/task), in the terminal."""
    from mental_edge.chat import chat

    chat(model, task=task, system=system, n_ctx=n_ctx, threads=threads, country=country, history=not no_history)
