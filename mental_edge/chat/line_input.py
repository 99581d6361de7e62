"""Reading what the user types in a chat: line editing and history through readline, and multi-line blocks.

A block starts with a line beginning with `\"\"\"` and ends with a line ending with `\"\"\"`; text pasted with
newlines arrives whole through readline's bracketed paste. The history file holds what the user typed (posts
included), so it is created owner-only and can be switched off.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import readline
except ImportError:  # Windows without pyreadline: plain input(), no history
    readline = None

from mental_edge.io.files import PRIVATE_MODE

PROMPT = ">>> "
MORE = "... "
BLOCK = '"""'
HISTORY_LENGTH = 2000


class LineReader:
    """`read()` returns one message (a line or a block), "" after Ctrl-C, and raises EOFError on Ctrl-D."""

    def __init__(self, history_file: Path | None = None):
        self.history_file = history_file if readline is not None else None
        if self.history_file is not None:
            _open_history(self.history_file)

    def read(self) -> str:
        try:
            line = self._line(PROMPT)
        except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line
            print()
            return ""
        if not line.lstrip().startswith(BLOCK):
            return line
        return self._block(line.lstrip()[len(BLOCK) :])

    def _block(self, first: str) -> str:
        if first.rstrip().endswith(BLOCK):  # """one line"""
            return first.rstrip()[: -len(BLOCK)]
        lines = [first] if first else []
        while True:
            try:
                line = self._line(MORE)
            except KeyboardInterrupt:
                print()
                return ""  # the block is abandoned
            except EOFError:
                break
            if line.rstrip().endswith(BLOCK):
                lines.append(line.rstrip()[: -len(BLOCK)])
                break
            lines.append(line)
        return "\n".join(lines).strip("\n")

    def _line(self, prompt: str) -> str:
        line = input(prompt)
        if self.history_file is not None and line.strip():
            try:
                readline.append_history_file(1, str(self.history_file))
            except OSError:
                self.history_file = None  # history is a convenience: never stop the session for it
        return line


def _open_history(path: Path) -> None:
    """Load the history, creating the file owner-only first so that it is never readable by others."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
        os.close(fd)
        readline.read_history_file(str(path))
    except OSError:
        return
    if readline.get_current_history_length() > HISTORY_LENGTH:
        readline.set_history_length(HISTORY_LENGTH)
        readline.write_history_file(str(path))  # trims the file
        readline.set_history_length(-1)
