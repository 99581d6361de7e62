"""Running the real `mental-edge` command in process (click's runner) and reading its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner, Result

from mental_edge.cli import main


def run(*args, input: str | None = None, catch_exceptions: bool = True) -> Result:
    """`mental-edge ARGS...` (each argument str()-ed); a traceback in its output fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=catch_exceptions)
    assert "Traceback" not in result.output, result.output
    return result


def one_error_line(result: Result, *words: str, besides_indented: bool = False) -> str:
    """A failed command says one line `Error: ...` (holding each of `words`) and exits 1. `besides_indented`:
    indented progress lines printed before the error may stand beside it."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    if besides_indented:
        lines = [line for line in lines if not line.startswith("  ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
