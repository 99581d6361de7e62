"""The `mental-edge` command: a click group whose commands each call one library function.

Each group of commands lives in its own module and registers itself on `main` when imported
below, so that a command is found from its name and nothing below this floor imports the CLI.
"""

import sys

import click

from mental_edge import __version__
from mental_edge.errors import MentalEdgeError


class _Group(click.Group):
    """Turns MentalEdgeError into a one-line message and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MentalEdgeError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="mental-edge")
def main():
    """Local mental-health analysis models for non-clinical research."""


def _register():
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name.endswith("_cmds"):
            importlib.import_module(f"{__name__}.{mod.name}")


_register()
