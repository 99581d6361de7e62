"""Generated tokens' log-probabilities (the engine's `TokenLogprob`s) in OpenAI's two shapes: chat's
`logprobs.content[]` ({token, logprob, bytes, top_logprobs[]}) and completions' `logprobs` ({tokens,
token_logprobs, top_logprobs, text_offset}).

A token is shown once text it is part of has been shown: tokens of a stop string (cut from the text) are left
out, and a streamed chunk carries the tokens whose text starts in it, so the chunks' tokens add up to the whole
answer's.
"""

from __future__ import annotations

from collections.abc import Callable

from mental_edge.engine import TokenLogprob


class TokenLog:
    """One answer's tokens, released as its text is (see the module doc)."""

    def __init__(self, token_bytes: Callable[[int], bytes], prompt_chars: int = 0):
        self._bytes = token_bytes
        self._prompt_chars = prompt_chars
        self._pending: list[TokenLogprob] = []
        self._token_end = 0  # bytes of the tokens released so far
        self._text = b""  # the answer's text shown so far

    def add(self, record: TokenLogprob) -> None:
        self._pending.append(record)

    def release(self, text: str) -> list[tuple[TokenLogprob, int]]:
        """After `text` is shown: the tokens now shown, each with its first character's offset in the prompt and
        answer together (completions' text_offset)."""
        self._text += text.encode("utf-8")
        out = []
        while self._pending:
            size = len(self._bytes(self._pending[0].token))
            if size and self._token_end >= len(self._text):  # its text is not shown (yet)
                break
            offset = self._prompt_chars + len(self._text[: self._token_end].decode("utf-8", "ignore"))
            out.append((self._pending.pop(0), offset))
            self._token_end += size
        return out

    # -- the shapes ---------------------------------------------------------------------------------

    def chat(self, released: list[tuple[TokenLogprob, int]]) -> dict:
        return {"content": [self._chat_entry(r) for r, _ in released], "refusal": None}

    def _chat_entry(self, record: TokenLogprob) -> dict:
        top = [self._token(t, lp) for t, lp in record.top]
        return {**self._token(record.token, record.logprob), "top_logprobs": top}

    def _token(self, token: int, logprob: float) -> dict:
        data = self._bytes(token)
        return {"token": _text(data), "logprob": logprob, "bytes": list(data)}

    def completion(self, released: list[tuple[TokenLogprob, int]]) -> dict:
        tops = []
        for record, _ in released:  # OpenAI: the alternatives and the chosen token, so up to n + 1
            top = {_text(self._bytes(t)): lp for t, lp in record.top}
            top.setdefault(_text(self._bytes(record.token)), record.logprob)
            tops.append(top)
        return {
            "tokens": [_text(self._bytes(r.token)) for r, _ in released],
            "token_logprobs": [r.logprob for r, _ in released],
            "top_logprobs": tops,
            "text_offset": [offset for _, offset in released],
        }


def _text(data: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows its bytes escaped (its `bytes` are exact)."""
    return data.decode("utf-8", "backslashreplace")
