"""OpenAI's response objects for one chat or completion request: the whole answer, or its stream of chunks."""

from __future__ import annotations

import time
import uuid

from mental_edge.engine import Result
from mental_edge.serve.logprobs import TokenLog

FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


class Shape:
    """`log` is None when the request asked for no log-probabilities."""

    def __init__(self, kind: str, model: str, prompt_tokens: int, log: TokenLog | None = None):
        self.kind, self.model, self.prompt_tokens, self.log = kind, model, prompt_tokens, log
        self.id = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, text: str) -> dict | None:
        """The log-probabilities of the tokens `text` (just shown) releases."""
        if self.log is None:
            return None
        released = self.log.release(text)
        return self.log.chat(released) if self.kind == "chat.completion" else self.log.completion(released)

    def usage(self, result: Result) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": result.generated_tokens,
            "total_tokens": self.prompt_tokens + result.generated_tokens,
        }

    def whole(self, result: Result) -> dict:
        reason = FINISH.get(result.finish_reason, "stop")
        if self.log is not None:
            for record in result.logprobs:
                self.log.add(record)
        logprobs = self._logprobs(result.text)
        if self.kind == "chat.completion":
            message = {"role": "assistant", "content": result.text}
            choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": result.text, "logprobs": logprobs, "finish_reason": reason}
        return {**self._head(self.kind), "choices": [choice], "usage": self.usage(result)}

    def chunk(self, text: str | None = None, role: bool = False, done: Result | None = None) -> dict:
        """The first chat chunk (`role`), one with new text, or the last (`done`: the finish reason)."""
        reason = FINISH.get(done.finish_reason, "stop") if done is not None else None
        logprobs = self._logprobs(text) if text else None
        if self.kind == "chat.completion":
            delta = {"role": "assistant", "content": ""} if role else {"content": text} if text else {}
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": reason}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, result: Result) -> dict:
        """stream_options.include_usage: a last chunk with no choices."""
        obj = "chat.completion.chunk" if self.kind == "chat.completion" else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self.usage(result)}
