"""`mental-edge prompt`: print the exact query a task builds for a post, so a user can check it."""

import sys
from contextlib import nullcontext

import click

from mental_edge.api.model import load
from mental_edge.cli import main
from mental_edge.cli.options import model_options, prompts_option, say
from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import FORMS, load_tasks


@main.command("prompt")
@click.option("--task", "task_name", required=True, help="Task name, a family (Irf) or 'all'; case-insensitive.")
@click.option(
    "--form",
    type=click.Choice(FORMS),
    default=None,
    help="Prompt form (default: the task's first form, instruction for the English tasks).",
)
@prompts_option
@click.argument("text", required=False)
@model_options(slots=False)
def prompt_command(task_name, form, prompts_dir, text, model_opts):
    """Print the prompt for TEXT (or the post read from stdin); with -m, the model's own form and wrapper, with its
    BOS and control tokens, as it is fed."""
    post = text if text is not None else _read_stdin()
    tasks = load_tasks(prompts_dir).get(task_name)
    if form and len(tasks) > 1:  # `all` or a family: the tasks that have this form
        tasks = [t for t in tasks if form in t.forms] or tasks
    with load(**model_opts, prompts=prompts_dir, say=say) if model_opts["model"] else nullcontext() as model:
        for task in tasks:
            if len(tasks) > 1:
                click.echo(f"==> {task.name} <==")
            if model is None:
                click.echo(task.render(post, form or task.forms[0]))
            else:
                click.echo(model.prompt(task, post, form=form))


def _read_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise MentalEdgeError("give the post as an argument or on stdin")
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text
