"""The `mental-edge` command: a click group whose commands each parse options, call the library (mental_edge's
public API, mental_edge/api/) and print.

Each command lives in the module named after it (`convert` also holds `quantize`, `store` holds `pull`, `import`
and `models`) and registers itself on `main` when imported below; `options` holds the options several share.
"""

import sys

import click

from mental_edge.errors import MentalEdgeError
from mental_edge.version import __version__


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
        if mod.name != "options":
            importlib.import_module(f"{__name__}.{mod.name}")


_register()
