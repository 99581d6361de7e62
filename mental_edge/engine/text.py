"""Generated token bytes to the text a caller sees, shared by every backend."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopText:
    """Token bytes in, text pieces out: whole UTF-8 characters only, and nothing of a stop string or after it
    (text that may be the start of one is held back until it is clear)."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = tuple(stop)
        self.stopped = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._held = ""

    def feed(self, data: bytes) -> str:
        self._held += self._utf8.decode(data)
        for s in self.stop:
            at = self._held.find(s)
            if at >= 0:
                self.stopped = True
                out, self._held = self._held[:at], ""
                return out
        hold = max(
            (
                k
                for s in self.stop
                for k in range(min(len(s) - 1, len(self._held)), 0, -1)
                if self._held.endswith(s[:k])
            ),
            default=0,
        )
        out, self._held = self._held[: len(self._held) - hold], self._held[len(self._held) - hold :]
        return out

    def flush(self) -> str:
        """What is left once generation ends without a stop string."""
        if self.stopped:
            return ""
        rest, self._held = self._held + self._utf8.decode(b"", final=True), ""
        return rest
