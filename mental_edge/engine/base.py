"""The engine interface: what the runtime needs from a model, whatever runs it.

`analysis`, `chat` and the CLI talk to an `Engine` only; each backend (llama.cpp today) implements it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text.

    `special=True` marks template text, in which control tokens (`<|user|>`, `</s>`) are recognised.
    A post's text is always `special=False`: whatever it contains stays plain text.
    """

    text: str
    special: bool = False


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters. temperature 0 means plain greedy decoding (top_p/top_k ignored)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_record(self) -> dict:
        if self.greedy:
            return {"temperature": 0.0}
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}


@dataclass
class ModelInfo:
    """What is loaded, as recorded with every result."""

    path: Path
    name: str
    architecture: str
    quantization: str
    n_ctx_train: int
    n_params: int
    chat_template: str | None
    add_bos: bool
    engine: str
    metadata: dict = field(default_factory=dict, repr=False)

    @cached_property
    def sha256(self) -> str:
        """Hash of the model file, computed on first use (several seconds for a 7B file)."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class Seq2SeqPrompt:
    """A prompt for an encoder-decoder engine: what the encoder reads, and the start of the answer that the
    decoder reads before it generates (an explanation is generated after its label's answer sentence)."""

    source: tuple[int, ...]
    target: tuple[int, ...] = ()


class Generation:
    """An iterator of text pieces that also tells, once exhausted or closed, why it stopped."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.finish_reason: str | None = None  # "stop" (end token or stop string), "length", "context"
        self.prompt_tokens = 0  # tokens of the prompt
        self.reused_tokens = 0  # prompt tokens found in the cache and not read again
        self.generated_tokens = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self):
        self._pieces.close()

    def text(self) -> str:
        """Consume the rest and return it."""
        return "".join(self)


@dataclass(eq=False)
class Request:
    """One piece of batched work: read a prompt, score candidate continuations, then maybe generate.

    `follow(scores)` gives the full prompt to generate from once the candidates are scored (say, the prompt with
    the chosen answer and "Reasoning:" appended); None means nothing is generated.
    """

    prompt: list[int]
    candidates: list[list[int]] = field(default_factory=list)
    follow: object = None  # Callable[[list[float]], list[int]] | None
    max_tokens: int = 0
    sampling: Sampling = Sampling()
    stop: tuple[str, ...] = ()
    tag: object = None  # the caller's, carried along
    meta: object = None  # the caller's, carried along
    on_text: object = None  # Callable[[str], None]: generated text as it streams
    cancelled: bool = False  # set (from any thread) to stop generating at the next token (batched runs)
    scores: list[float] | None = None  # filled in: log-probability of each candidate
    text: str = ""  # filled in: the generated text
    finish_reason: str | None = None  # "stop", "length", "context" or "cancelled"
    generated_tokens: int = 0  # filled in: tokens generated


class Engine(ABC):
    info: ModelInfo
    n_ctx: int
    settings: dict  # threads, gpu layers, batch size...: recorded with results, since outputs can depend on them
    encoder_decoder: bool = False  # prompts go to an encoder, answers to a decoder (T5, BART)
    slots: int = 1  # sequences kept in flight by run_requests; 1: one request at a time

    def run_requests(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Run requests, yielding each once done (in completion order). This default runs them one by one;
        a backend that batches keeps `slots` of them in flight."""
        for req in requests:
            if req.candidates:
                req.scores = self.score(req.prompt, req.candidates)
            if req.follow is not None:
                gen = self.generate(
                    req.follow(req.scores or []), max_tokens=req.max_tokens, sampling=req.sampling, stop=req.stop
                )
                pieces = []
                for piece in gen:
                    pieces.append(piece)
                    if req.on_text is not None:
                        req.on_text(piece)
                req.text = "".join(pieces)
                req.finish_reason = gen.finish_reason
                req.generated_tokens = gen.generated_tokens
            yield req

    @abstractmethod
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    @abstractmethod
    def tokenize_segments(self, segments: Sequence[Segment], *, add_bos: bool) -> list[int]:
        """Tokens of the joined segments, control tokens recognised only inside special segments."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_text(self, token: int) -> str:
        """The vocabulary's text of one token, control tokens included (`<s>`, `<|im_end|>`): what a chat
        template means by `bos_token`. `detokenize` gives control tokens no text."""
        raise NotImplementedError

    @abstractmethod
    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (eos, eot, ...)."""

    @abstractmethod
    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Total log-probability of each continuation after the prompt (the prompt is read once)."""

    @abstractmethod
    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
    ) -> Generation:
        """Stream the continuation of the prompt; reuses the cache of the longest common prefix."""

    def close(self):  # noqa: B027 - optional: engines without resources keep it
        """Free the model."""
