"""Request bodies of the HTTP API (pydantic models; FastAPI publishes them in the OpenAPI description).

Types and ranges are checked here (422 when wrong); lengths that depend on the server's settings (a post's
characters, a prompt's tokens) are checked by the routes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mental_edge.analysis import DEFAULT_MAX_TOKENS
from mental_edge.engine import Sampling
from mental_edge.prompt_format import FORMATS

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


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class _OpenAI(_Sampled):
    """What the OpenAI endpoints share; unknown fields are ignored, as clients send many."""

    model: str | None = Field(None, description="Ignored: the server runs one model.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only one choice.")

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)


class ChatRequest(_OpenAI):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=MAX_GENERATED, description="Default: what the context leaves.")


class CompletionRequest(_OpenAI):
    prompt: str
    max_tokens: int = Field(16, ge=1, le=MAX_GENERATED)
