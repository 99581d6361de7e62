"""`mental-edge prompt`: print the exact query a task builds for a post, so a user can check it."""

import sys

import click

from mental_edge.cli import main
from mental_edge.cli.common import model_options, open_engine
from mental_edge.errors import MentalEdgeError
from mental_edge.tasks import FORMS, load_tasks


@main.command("prompt")
@click.option("--task", "task_name", required=True, help="Task name, a family (Irf) or 'all'; case-insensitive.")
@click.option(
    "--form",
    type=click.Choice(FORMS),
    default=None,
    help="Prompt form (default: the task's first form, instruction for the English tasks).",
)
@click.option(
    "--prompts",
    "prompts_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of task files and templates adding to or overriding the package's.",
)
@click.argument("text", required=False)
@model_options(slots=False)
def prompt_command(task_name, form, prompts_dir, text, model_opts):
    """Print the prompt for TEXT (or the post read from stdin); with -m, the model's own form and wrapper, with its
    BOS and control tokens, as it is fed."""
    post = text if text is not None else _read_stdin()
    tasks = load_tasks(prompts_dir).get(task_name)
    if form and len(tasks) > 1:  # `all` or a family: the tasks that have this form
        tasks = [t for t in tasks if form in t.forms] or tasks
    wrap = _model_wrapper(model_opts) if model_opts["model"] else None
    for task in tasks:
        if len(tasks) > 1:
            click.echo(f"==> {task.name} <==")
        if wrap is None:
            click.echo(task.render(post, form or task.forms[0]))
        else:
            click.echo(wrap(task, post, form))


def _model_wrapper(model_opts: dict):
    """The exact text a model is fed for a task: its form, its query format, BOS where the file adds one."""
    from mental_edge.tasks.prompt_format import form_for, query_format_for

    engine = open_engine(**model_opts)
    fmt = query_format_for(engine.info)

    def wrap(task, post, form):
        query = task.render(post, form or form_for(engine.info, task.language))
        tokens = engine.tokenize_segments(fmt.segments(query), add_bos=fmt.add_bos)
        text = "".join(segment.text for segment in fmt.segments(query))
        bos = engine.token_text(tokens[0]) if fmt.add_bos and engine.info.add_bos else ""
        return bos + text

    return wrap


def _read_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise MentalEdgeError("give the post as an argument or on stdin")
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text
