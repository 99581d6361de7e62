"""`mental-edge prompt`: print the exact query a task builds for a post, so a user can check it."""

import sys

import click

from mental_edge.cli import main
from mental_edge.errors import MentalEdgeError
from mental_edge.tasks import FORMS, load_tasks


@main.command("prompt")
@click.option("--task", "task_name", required=True, help="Task name, a family (Irf) or 'all'; case-insensitive.")
@click.option("--form", type=click.Choice(FORMS), default=None,
              help="Prompt form (default: the task's first form, instruction for the English tasks).")
@click.option("--prompts", "prompts_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of task files and templates adding to or overriding the package's.")
# --model M (the model's own form and wrapper) is added here by the engine owner: it would pick `form`
# from the model and wrap the query with mental_edge.prompt_format before printing.
@click.argument("text", required=False)
def prompt_command(task_name, form, prompts_dir, text):
    """Print the prompt for TEXT (or the post read from stdin)."""
    post = text if text is not None else _read_stdin()
    tasks = load_tasks(prompts_dir).get(task_name)
    if form and len(tasks) > 1:  # `all` or a family: the tasks that have this form
        tasks = [t for t in tasks if form in t.forms] or tasks
    for task in tasks:
        if len(tasks) > 1:
            click.echo(f"==> {task.name} <==")
        click.echo(task.render(post, form or task.forms[0]))


def _read_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise MentalEdgeError("give the post as an argument or on stdin")
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text
