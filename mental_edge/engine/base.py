"""The engine interface: what the runtime needs from a model, whatever runs it.

`analysis`, `chat`, `serve` and the CLI talk to an `Engine` only; each backend (llama.cpp, CTranslate2) implements
it. What an engine is fed is explicit: `encode(PromptText)` turns text segments into the prompt as this model takes
it (decoder tokens, or a `Seq2SeqPrompt` for an encoder-decoder model), framed the way the model was trained (BOS
where the file asks, T5's closing `</s>`, BART's `<s> ... </s>`). Work goes in as a `Request` and comes back as a
`Result`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from mental_edge.errors import MentalEdgeError


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text.

    `special=True` marks template text, in which control tokens (`<|user|>`, `</s>`) are recognised.
    A post's text is always `special=False`: whatever it contains stays plain text.
    """

    text: str
    special: bool = False


@dataclass(frozen=True)
class PromptText:
    """A prompt before it meets a model: the query's segments and, when an answer is scored or continued, the
    answer's start.

    `Engine.encode` makes it what the model is fed. A decoder-only model reads `separator + answer` right after the
    segments (plain text joined with the query's own last plain run, as the joined text would tokenize); an
    encoder-decoder model's encoder reads the segments and its decoder starts with the answer. `frame=False` leaves
    out the model's own framing (a template that writes it itself, as GLM-4's `[gMASK]<sop>`)."""

    segments: tuple[Segment, ...]
    answer: str | None = None
    separator: str = " "
    frame: bool = True


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters. temperature 0 means plain greedy decoding (top_p/top_k ignored)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    # OpenAI's penalties over the tokens generated so far (llama.cpp's penalties stage, before greedy or top-k):
    # logit - count * frequency_penalty - (count > 0) * presence_penalty
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    grammar: str | None = None  # GBNF (see engine/grammar.py) the output must match; None: any text
    # report each generated token's log-probability under the model (before penalties, grammar and temperature),
    # with this many of the most likely tokens at that step; None: none (engines that cannot: see `features`)
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_record(self) -> dict:
        base = (
            {"temperature": 0.0}
            if self.greedy
            else {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}
        )
        extra = {"frequency_penalty": self.frequency_penalty, "presence_penalty": self.presence_penalty}
        base.update({k: v for k, v in extra.items() if v})
        if self.grammar is not None:
            base["grammar_sha256"] = hashlib.sha256(self.grammar.encode("utf-8")).hexdigest()[:16]
        return base


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the model, and the most likely tokens at its step (most
    likely first; as many as `Sampling.logprobs` asked)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


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

    def __len__(self) -> int:
        """The prompt's length as a context limit counts it: the encoder's input."""
        return len(self.source)


Prompt = list[int] | Seq2SeqPrompt  # what `Engine.encode` gives and `Engine.generate` takes


class Generation:
    """An iterator of text pieces that also tells, once exhausted or closed, why it stopped."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.finish_reason: str | None = None  # "stop" (end token or stop string), "length", "context", "grammar"
        self.prompt_tokens = 0  # tokens of the prompt
        self.reused_tokens = 0  # prompt tokens found in the cache and not read again
        self.generated_tokens = 0
        self.logprobs: list[TokenLogprob] = []  # per generated token, when `Sampling.logprobs` asks

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()

    def text(self) -> str:
        """Consume the rest and return it."""
        return "".join(self)


K = TypeVar("K")


@dataclass(eq=False)
class Request(Generic[K]):
    """What goes in: read a prompt, score candidate continuations, then maybe generate.

    `follow(scores)` gives the prompt to generate from once the candidates are scored (say, the prompt with the
    chosen answer and "Reasoning:" appended); None means nothing is generated. `key` is the caller's, carried to
    the `Result`. `on_text` gets generated text as it streams (and `on_token` each token's log-probability, when
    `sampling.logprobs` asks, before the text it is part of); `cancelled` may be set from any thread to stop
    generating at the next token."""

    prompt: Sequence[int] | Seq2SeqPrompt
    candidates: Sequence[Sequence[int]] = ()
    follow: Callable[[list[float]], Sequence[int] | Seq2SeqPrompt] | None = None
    max_tokens: int = 0
    sampling: Sampling = Sampling()
    stop: tuple[str, ...] = ()
    key: K | None = None
    on_text: Callable[[str], None] | None = None
    on_token: Callable[[TokenLogprob], None] | None = None
    cancelled: bool = False


@dataclass(eq=False)
class Result(Generic[K]):
    """What comes back for one request."""

    request: Request[K]
    scores: list[float] = field(default_factory=list)  # log-probability of each candidate
    text: str = ""  # the generated text
    # "stop", "length", "context", "cancelled" or "grammar" (the output grammar allowed no next token); None when
    # nothing was generated
    finish_reason: str | None = None
    generated_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per generated token, when the sampling asked

    @property
    def key(self) -> K | None:
        return self.request.key


def _tell_tokens(req: Request, logprobs: list[TokenLogprob], told: int) -> int:
    """Give `req.on_token` the records from `told` on; returns how many it has had."""
    if req.on_token is not None:
        for record in logprobs[told:]:
            req.on_token(record)
    return len(logprobs)


IDLE = object()  # from a source of requests: nothing is waiting now (requests in flight go on)


class RequestRunner(Protocol):
    """Keeps several requests in flight over one source of requests, which may never end (a server's queue):
    the source yields `IDLE` when nothing waits while requests are in flight, and blocks while none is."""

    busy: int  # requests in flight now
    peak_busy: int  # the most in flight at once so far

    def run(self, requests: Iterable[Request | object]) -> Iterator[Result]: ...


class Engine(ABC):
    info: ModelInfo
    n_ctx: int
    settings: dict  # threads, gpu layers, batch size...: recorded with results, since outputs can depend on them
    encoder_decoder: bool = False  # prompts go to an encoder, answers to a decoder (T5, BART)
    slots: int = 1  # requests kept in flight by run_requests; 1: one request at a time
    # which Sampling extras this engine honours: "logprobs", "grammar", "penalties" (a caller refuses the others)
    features: frozenset[str] = frozenset()

    # -- what the model is fed ------------------------------------------------------------------------

    def encode(self, text: PromptText) -> list[int] | Seq2SeqPrompt:
        """The prompt as this model takes it: decoder tokens (the answer's start after the query), or for an
        encoder-decoder model a `Seq2SeqPrompt` (the query to the encoder, the answer's start to the decoder).
        Every caller (analysis, generate, chat, serve) builds its prompts through here."""
        if not self.encoder_decoder:
            segments = list(text.segments)
            if text.answer is not None:
                segments.append(Segment(text.separator + text.answer))
            tokens = self.tokenize_segments(segments)
            return self.frame(tokens) if text.frame else tokens
        source = self.tokenize_segments(text.segments)
        target = self.tokenize(text.answer) if text.answer else []
        return Seq2SeqPrompt(tuple(self.frame(source) if text.frame else source), tuple(target))

    @abstractmethod
    def frame(self, tokens: list[int]) -> list[int]:
        """The model's own additions around a prompt's tokens (for an encoder-decoder model, the encoder's)."""

    @abstractmethod
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    @abstractmethod
    def tokenize_segments(self, segments: Sequence[Segment], *, add_bos: bool = False) -> list[int]:
        """Tokens of the joined segments, control tokens recognised only inside special segments. `add_bos`
        applies `frame` (kept for callers that tokenize segments themselves; `encode` is the contract)."""

    @abstractmethod
    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_text(self, token: int) -> str:
        """The vocabulary's text of one token, control tokens included (`<s>`, `<|im_end|>`): what a chat
        template means by `bos_token`. `detokenize` gives control tokens no text."""
        raise NotImplementedError

    @abstractmethod
    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (eos, eot, ...)."""

    # -- evaluation ---------------------------------------------------------------------------------

    @abstractmethod
    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Total log-probability of each continuation after the prompt (the prompt is read once)."""

    @abstractmethod
    def generate(
        self,
        prompt: Sequence[int] | Seq2SeqPrompt,
        *,
        max_tokens: int,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
    ) -> Generation:
        """Stream the continuation of the prompt; reuses the cache of the longest common prefix."""

    def run_one(self, req: Request[K]) -> Result[K]:
        """One request, on its own: score its candidates, then generate after its follow-up prompt."""
        result = Result(req)
        if req.candidates:
            prompt = req.prompt.source if isinstance(req.prompt, Seq2SeqPrompt) else req.prompt
            result.scores = self.score(prompt, req.candidates)
        if req.follow is None:
            return result
        gen = self.generate(req.follow(result.scores), max_tokens=req.max_tokens, sampling=req.sampling, stop=req.stop)
        pieces, told = [], 0
        for piece in gen:
            told = _tell_tokens(req, gen.logprobs, told)
            pieces.append(piece)
            if req.on_text is not None:
                req.on_text(piece)
        _tell_tokens(req, gen.logprobs, told)
        result.text = "".join(pieces)
        result.finish_reason = gen.finish_reason
        result.generated_tokens = gen.generated_tokens
        result.logprobs = list(gen.logprobs)
        return result

    def run_requests(self, requests: Iterable[Request[K]]) -> Iterator[Result[K]]:
        """Run requests, yielding each one's result once done (in completion order). This default runs them one
        by one (`run_one`); an engine that batches keeps `slots` of them in flight (see `batch_runner`)."""
        runner = self.batch_runner()
        if runner is not None:
            yield from runner.run(requests)
            return
        for req in requests:
            if req is not IDLE:
                yield self.run_one(req)

    def batch_runner(self) -> RequestRunner | None:
        """A fresh runner keeping `slots` requests in flight, for a source that may never end (a server's
        queue); None when this engine runs one request at a time."""
        return None

    def prompt_logits(self, prompt: list[int] | Seq2SeqPrompt) -> np.ndarray:
        """The logits at every position of `prompt`, one row a position (`mental-edge verify` compares them with
        a reference's). Engines that cannot say so here; those that can list "prompt_logits" in `features`."""
        raise MentalEdgeError(f"{type(self).__name__} gives no logits per position, so it cannot be verified")

    def check_request(self, req: Request) -> None:  # noqa: B027 - most engines can run any request
        """Raise MentalEdgeError when this engine could never run `req` (say, its cache cannot hold it)."""

    def reset(self) -> None:  # noqa: B027 - engines that keep nothing between requests have nothing to forget
        """Forget whatever the engine keeps between requests (a cached prefix, a batch cut short), so the next
        request runs as on a fresh engine; called after a run was interrupted."""

    def close(self) -> None:  # noqa: B027 - optional: engines without resources keep it
        """Free the model."""
