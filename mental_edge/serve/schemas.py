"""Request bodies of the HTTP API (pydantic models; FastAPI publishes them in the OpenAPI description).

Types and ranges are checked here (422 when wrong); lengths that depend on the server's settings (a post's
characters, a prompt's tokens) are checked by the routes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mental_edge.analysis import DEFAULT_MAX_TOKENS
from mental_edge.engine import Sampling
from mental_edge.engine.grammar import json_grammar
from mental_edge.prompting.query_format import FORMATS
from mental_edge.serve.errors import ApiError

MAX_POSTS = 256  # posts in one analyze request
MAX_TASKS = 64
MAX_MESSAGES = 256
MAX_GENERATED = 4096  # max_tokens at most (the context limits it further)
SEED_MAX = 2**32 - 1


class _Sampled(BaseModel):
    temperature: float = Field(0.0, ge=0, le=2, description="0 is greedy decoding (the default here).")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Sampling seed (0 when not given).")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed or 0)


class Post(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=200)
    text: str


class AnalyzeRequest(_Sampled):
    model_config = ConfigDict(extra="forbid")
    posts: list[str | Post] = Field(
        ..., min_length=1, max_length=MAX_POSTS, description="Posts as text (ids 1, 2, ...) or {id, text}."
    )
    tasks: list[str] = Field(
        ..., min_length=1, max_length=MAX_TASKS, description="Task names, families or 'all', as `analyze --task`."
    )
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_GENERATED, description="Most tokens of explanation.")
    explain: bool = True
    free: bool = Field(False, description="Let the model answer freely and parse its label.")
    prompt_format: Literal[tuple(FORMATS)] | None = None  # type: ignore[valid-type]


# -- the OpenAI endpoints --------------------------------------------------------------------------
# Every field OpenAI's API defines is either honoured or refused by name (400): the models keep what they do not
# declare (extra="allow") and `refusal()` names it. A field sent as null counts as not sent.

MAX_TOP_LOGPROBS = 20  # chat's top_logprobs, as OpenAI allows
MAX_COMPLETION_LOGPROBS = 5  # completions' logprobs, as OpenAI allows
REASONS = {
    "tools": "no tool calls",
    "tool_choice": "no tool calls",
    "parallel_tool_calls": "no tool calls",
    "functions": "no function calls",
    "function_call": "no function calls",
    "logit_bias": "no logit bias",
    "echo": "the prompt is not echoed back",
    "suffix": "no insertion after a suffix",
    "best_of": "one completion is generated per request",
    "name": "the chat template has no participant names",
}


class _Open(BaseModel):
    """Part of an OpenAI request; undeclared fields are kept so that they can be refused by name."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_sent(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    def refusal(self, where: str = "") -> str | None:
        """The first field this server does not honour, as "field: why"; None when there is none."""
        for key in self.model_extra or {}:
            return f"{where}{key}: not supported by this server ({REASONS.get(key, 'not a field it reads')})"
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            items = enumerate(value) if isinstance(value, list) else [(None, value)]
            for i, item in items:
                label = f"{where}{field.alias or name}" + ("" if i is None else f"[{i}]")
                if isinstance(item, _Open) and (why := item.refusal(label + ".")):
                    return why
        return None


class ContentPart(_Open):
    type: str = Field(..., description="Only 'text' parts are read.")
    text: str = ""

    def refusal(self, where: str = "") -> str | None:
        if self.type != "text":
            return f"{where}type: {self.type!r} parts are not supported (text only)"
        return super().refusal(where)


class ChatMessage(_Open):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] = Field(..., description="Text, or a list of text parts (joined).")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaFormat(_Open):
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema", description="A JSON Schema; absent: any JSON object.")
    strict: bool | None = Field(None, description="Output always fits the schema here (grammar-constrained).")


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def grammar(self) -> str | None:
        """GBNF for the output (engine/grammar.py), None for plain text; MentalEdgeError names a bad schema."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return json_grammar(None, "response_format")
        if self.json_schema is None:
            raise ApiError(400, "response_format.json_schema: required when type is 'json_schema'")
        return json_grammar(self.json_schema.schema_, "response_format.json_schema.schema")


class StreamOptions(_Open):
    include_usage: bool = Field(False, description="A last chunk with the usage and no choices.")


class _OpenAI(_Sampled, _Open):
    """What the OpenAI endpoints share."""

    model: str | None = Field(None, description="Any name: the server runs one model, named in the answer.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, description="Only 1: one choice per request.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Minus count x this, per generated token.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Minus this for each token generated before.")
    response_format: ResponseFormat | None = Field(None, description="json_object / json_schema: a grammar.")

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)

    def refusal(self, where: str = "") -> str | None:
        if self.n != 1:
            return "n: this server generates one choice per request (n=1)"
        if self.stream_options is not None and not self.stream:
            return "stream_options: only with stream=true"
        return super().refusal(where)

    def alternatives(self) -> int | None:
        """How many alternatives per generated token to report; None: no log-probabilities."""
        return None

    def sampling(self) -> Sampling:
        grammar = self.response_format.grammar() if self.response_format is not None else None
        return replace(
            super().sampling(),
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            grammar=grammar,
            logprobs=self.alternatives(),
        )


class ChatRequest(_OpenAI):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=MAX_GENERATED, description="Default: what the context leaves.")
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_GENERATED, description="max_tokens' new name.")
    logprobs: bool = Field(False, description="Each generated token's log-probability under the model.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: alternatives.")

    def refusal(self, where: str = "") -> str | None:
        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs: only with logprobs=true"
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            return "max_completion_tokens: differs from max_tokens (send one)"
        return super().refusal(where)

    def alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def most_tokens(self) -> int | None:
        return self.max_tokens or self.max_completion_tokens


class CompletionRequest(_OpenAI):
    prompt: str
    max_tokens: int = Field(16, ge=1, le=MAX_GENERATED)
    logprobs: int | None = Field(
        None, ge=0, le=MAX_COMPLETION_LOGPROBS, description="The tokens' log-probabilities and this many alternatives."
    )

    def alternatives(self) -> int | None:
        return self.logprobs

    def most_tokens(self) -> int | None:
        return self.max_tokens
