"""Write docs/cli.md: every `mental-edge` command and subcommand's `--help`, as the command prints it.

Run `python docs/gen_cli.py` after changing a command or an option; tests/test_docs.py regenerates the page and
fails when the file differs, so the reference cannot drift from the commands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

PAGE = Path(__file__).resolve().parent / "cli.md"
WIDTH = 100  # help text is wrapped to this width whatever the terminal, so the page is the same everywhere

HEADER = """# Command-line reference

Every command's `--help`, generated from the commands by `python docs/gen_cli.py` (do not edit by hand: the test
suite regenerates this page and fails when it differs). How the commands fit together: [README](../README.md) and
the pages it links.
"""


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command below `group`, depth first, in the order `--help` lists them (by name)."""
    ctx = click.Context(group, info_name="mental-edge")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


def help_text(main: click.Group, path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(
        main, [*path, "--help"], prog_name="mental-edge", terminal_width=WIDTH, max_content_width=WIDTH
    )
    if result.exit_code != 0:
        raise RuntimeError(f"mental-edge {' '.join(path)} --help exited {result.exit_code}: {result.output}")
    return result.output.rstrip() + "\n"


def render() -> str:
    from mental_edge.cli import main

    sections = [HEADER]
    for path in [(), *command_paths(main)]:
        title = " ".join(("mental-edge", *path))
        sections.append(f"## {title}\n\n```text\n{help_text(main, path)}```\n")
    return "\n".join(sections)


def main() -> int:
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
