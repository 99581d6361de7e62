"""FakeEngine: a deterministic stand-in for a model, implementing the Engine interface (mental_edge/engine/base.py).

The fast tier runs the runner, io, tasks, resume and the CLI through it, the way simonw/llm tests its CLI with a
MockModel: no weights, no llama.cpp, a millisecond a post. It is a language model of its own, only a silly one:
- its tokenizer cuts text into words with their leading whitespace (`" post"`); a piece's id is a hash of its
  text, so ids are the same in every process; control tokens (`<s>`, `</s>`, `<|user|>` ...) are recognised
  in special segments (and `special=True` text) only, never in plain text;
- the log-probability of a token is a hash of all the text before it (control tokens marked as such) and of
  the token's own text (`logprob`), so scores depend on the post, the task, the wrapper and the answer;
- greedy generation takes, at each step, the most probable of `WORDS` and the end token; sampling mixes the
  seed and temperature in. Stop strings, the context limit and the cached prefix behave as the real engine's.

`FakeModels` (the `fake_models` fixture) makes the CLI open FakeEngines: it replaces `load_engine` where
the library opens it through `mental_edge.engine_loader`, and nothing in mental_edge/ knows about it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from mental_edge.api.loading import engine_loader
from mental_edge.engine import Engine, Generation, ModelInfo, Sampling, Segment, Seq2SeqPrompt, TokenLogprob
from mental_edge.engine.base import IDLE, Request, Result
from mental_edge.errors import MentalEdgeError

BOS, EOS = 1, 2
CONTROLS = {
    "<s>": BOS,
    "</s>": EOS,
    "<|user|>": 3,
    "<|assistant|>": 4,
    "[gMASK]": 5,
    "<sop>": 6,
    "<|im_start|>": 7,
    "<|im_end|>": 8,
}
CONTROL_TEXT = {token: text for text, token in CONTROLS.items()}
WORDS = tuple(
    " " + w for w in "the poster feels sad tired alone hopeful calm because of work sleep family and not very .".split()
)
PIECE = re.compile(r"\s*\S+|\s+")  # a word with the whitespace before it; trailing whitespace
_CONTROL = re.compile("|".join(re.escape(text) for text in sorted(CONTROLS, key=len, reverse=True)))
_PIECES: dict[int, str] = {}  # id -> text of every plain piece seen (ids are hashes: the same in every instance)
ENGINE_NAME = "fake (tests/support/fake_engine.py)"
CONTROL_TEXT_MARKED = "\x01</s>\x01"  # the end token as the fake model reads it
END_PENALTY = 1.0  # makes answers a few dozen words long on average


def piece_id(piece: str) -> int:
    token = 100 + int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=6).digest(), "little")
    _PIECES.setdefault(token, piece)
    return token


def logprob(context: str, piece: str, salt: str = "") -> float:
    """The fake model's log-probability of `piece` after the text `context`: in [-6.05, -0.05]. Another `salt`
    is another model."""
    digest = hashlib.blake2b(f"{salt}\x00{context}\x00{piece}".encode(), digest_size=4).digest()
    return -0.05 - 6.0 * int.from_bytes(digest, "little") / 2**32


def text_logprob(context: str, text: str, salt: str = "") -> float:
    """The log-probability of plain `text` after `context` (control tokens written `\x01<s>\x01`), piece by
    piece: what a test expects the model's scores to come from."""
    total = 0.0
    for piece in PIECE.findall(text):
        total += logprob(context, piece, salt)
        context += piece
    return total


BOS_TEXT = "\x01<s>\x01"  # how the fake model reads BOS before a llama-family prompt


def expected(post: str, task, form: str = "instruction", salt: str = ""):
    """(label, probabilities) the fake model gives `post` for `task`, from the answer sentences' log-probability."""
    query = task.render(post, form)
    scores = {label: text_logprob(BOS_TEXT, f"{query} {task.answer(label, form)}", salt) for label in task.labels}
    top = max(scores.values())
    weights = {label: math.exp(s - top) for label, s in scores.items()}
    total = sum(weights.values())
    probabilities = {label: w / total for label, w in weights.items()}
    return max(probabilities, key=probabilities.get), probabilities


def expected_explanation(post: str, label: str, task, form: str = "instruction", max_tokens: int = 256) -> str:
    """The fake model's greedy continuation of the query, the label's answer sentence and the reasoning marker."""
    engine = FakeEngine()
    text = f"{task.render(post, form)} {task.explain_prefix(label, form)}"
    return engine.generate(engine.tokenize(text, add_bos=True), max_tokens=max_tokens).text().strip()


class FakeEngine(Engine):
    """`architecture` picks the family the runtime sees (llama, chatglm; t5 makes it encoder-decoder).
    `fail_after=N` raises KeyboardInterrupt at the N+1th request, as a Ctrl-C in the middle of a run.
    `salt` makes another model (other scores, other text). `calls` logs ("score" | "generate", the prompt's plain
    text, its tokens) in order, for tests to see what the model was fed."""

    features = frozenset({"logprobs"})  # Sampling.logprobs: each generated token's log-probability and the top

    def __init__(
        self,
        path: str | Path = "fake.gguf",
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        gpu_layers: int | None = None,
        slots: int | None = None,
        name: str | None = None,
        architecture: str = "llama",
        fail_after: int | None = None,
        salt: str = "",
        **_options,
    ):
        path = Path(path)
        self.encoder_decoder = architecture in ("t5", "bart")
        self.info = ModelInfo(
            path=path,
            name=name or path.stem,
            architecture=architecture,
            quantization="F16",
            n_ctx_train=4096,
            n_params=1000,
            chat_template=None,
            add_bos=architecture == "llama",
            engine=ENGINE_NAME,
            metadata={"general.architecture": architecture},
        )
        self.n_ctx = min(n_ctx or 2048, self.info.n_ctx_train)
        self.slots = 1 if self.encoder_decoder else (slots or 4)
        self.settings = {"n_ctx": self.n_ctx, "threads": threads or 1, "gpu_layers": gpu_layers or 0}
        self.settings["slots"] = self.slots
        self.fail_after = fail_after
        self.salt = salt
        self.calls: list[tuple[str, str, list[int]]] = []
        self.requests = 0
        self.resets = 0  # Engine.reset calls (after an interrupted run)
        self.peak_in_flight = 0
        self.closed = False
        self._cached: list[int] = []  # the last generation's tokens, as a real engine's cache holds them

    # -- tokens -------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        tokens = self.tokenize_segments([Segment(text, special=special)])
        return self.frame(tokens) if add_bos else tokens

    def tokenize_segments(self, segments: Sequence[Segment], *, add_bos: bool = False) -> list[int]:
        """Plain text between control tokens is joined and cut as one run, as llama.cpp's engine does."""
        tokens: list[int] = []
        run = ""
        for seg in segments:
            if not seg.special:
                run += seg.text
                continue
            pos = 0
            for match in _CONTROL.finditer(seg.text):
                run += seg.text[pos : match.start()]
                tokens += [piece_id(p) for p in PIECE.findall(run)] + [CONTROLS[match.group()]]
                run, pos = "", match.end()
            run += seg.text[pos:]
        tokens += [piece_id(p) for p in PIECE.findall(run)]
        return self.frame(tokens) if add_bos else tokens

    def frame(self, tokens: list[int]) -> list[int]:
        """BOS first for the llama family (never twice); T5's encoder input ends with `</s>`."""
        if self.encoder_decoder:
            return tokens if tokens[-1:] == [EOS] else [*tokens, EOS]
        if self.info.add_bos and tokens[:1] != [BOS]:
            return [BOS, *tokens]
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join("" if t in CONTROL_TEXT else _PIECES[t] for t in tokens)

    def token_text(self, token: int) -> str:
        return CONTROL_TEXT.get(token) or _PIECES[token]

    def is_end(self, token: int) -> bool:
        return token == EOS

    def context_text(self, tokens: Sequence[int]) -> str:
        """The text the fake model conditions on: control tokens marked, so `</s>` typed in a post differs."""
        return "".join(f"\x01{CONTROL_TEXT[t]}\x01" if t in CONTROL_TEXT else _PIECES[t] for t in tokens)

    # -- the model ----------------------------------------------------------------------------------

    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        self._count("score", prompt)
        context = self._context(prompt)
        scores = []
        for continuation in continuations:
            text, total = context, 0.0
            for token in continuation:
                piece = self.context_text([token])
                total += logprob(text, piece, self.salt)
                text += piece
            scores.append(total)
        return scores

    def generate(
        self,
        prompt: Sequence[int] | Seq2SeqPrompt,
        *,
        max_tokens: int,
        sampling: Sampling = Sampling(),
        stop: Sequence[str] = (),
    ) -> Generation:
        tokens = list(prompt.target) if isinstance(prompt, Seq2SeqPrompt) else list(prompt)
        source = prompt.source if isinstance(prompt, Seq2SeqPrompt) else ()
        self._count("generate", prompt)
        length = len(source or tokens)
        if length > self.n_ctx:
            raise MentalEdgeError(f"a prompt of {length} tokens does not fit the context of {self.n_ctx}")
        return FakeGeneration(self, source, tokens, max_tokens, sampling, stop)

    def next_token(self, context: str, sampling: Sampling, step: int) -> int:
        """The most probable of WORDS and the end token; a sampled step adds seeded noise."""
        options = self.step_logprobs(context)

        def weight(token: int) -> float:
            if sampling.greedy:
                return options[token]
            return options[token] + sampling.temperature * logprob(
                f"{sampling.seed}:{step}", self.context_text([token])
            )

        return max(options, key=weight)

    def step_logprobs(self, context: str) -> dict[int, float]:
        """The fake model's log-probability of each token it can generate after `context` (WORDS and the end)."""
        options = {piece_id(w): logprob(context, w, self.salt) for w in WORDS}
        options[EOS] = logprob(context, CONTROL_TEXT_MARKED, self.salt) - END_PENALTY
        return options

    def token_logprob(self, context: str, token: int, top: int) -> TokenLogprob:
        options = self.step_logprobs(context)
        best = sorted(options.items(), key=lambda kv: -kv[1])[:top]
        return TokenLogprob(token, options[token], tuple(best))

    def batch_runner(self):
        return FakeBatcher(self) if self.slots > 1 else None

    def reset(self) -> None:
        self.resets += 1

    def close(self):
        self.closed = True

    def _context(self, prompt: Sequence[int] | Seq2SeqPrompt, target: Sequence[int] = ()) -> str:
        if self.encoder_decoder:  # score() gets the encoder's tokens; the decoder's answer follows them
            source = prompt.source if isinstance(prompt, Seq2SeqPrompt) else prompt
            return "\x02encoder\x02" + self.context_text(source) + "\x02decoder\x02" + self.context_text(target)
        return self.context_text(prompt)

    def _count(self, kind: str, prompt: Sequence[int] | Seq2SeqPrompt) -> None:
        if self.fail_after is not None and kind == "score" and self.requests >= self.fail_after:
            raise KeyboardInterrupt
        self.requests += kind == "score"
        source = prompt.source if isinstance(prompt, Seq2SeqPrompt) else prompt
        self.calls.append((kind, self.detokenize(source), list(source)))


class FakeGeneration(Generation):
    """Streams the fake model's continuation and counts it as the real engines do."""

    def __init__(self, engine: FakeEngine, source, tokens: list[int], max_tokens: int, sampling: Sampling, stop):
        super().__init__(self._steps(engine, source, tokens, max_tokens, sampling, tuple(stop)))
        self.prompt_tokens = len(source or tokens)
        cached = engine._cached if not source else []
        shared = next((i for i, (a, b) in enumerate(zip(cached, tokens)) if a != b), min(len(cached), len(tokens)))
        self.reused_tokens = min(shared, len(tokens) - 1) if tokens else 0

    def _steps(self, engine: FakeEngine, source, tokens, max_tokens, sampling, stop) -> Iterator[str]:
        context = engine._context(source, tokens) if source else engine.context_text(tokens)
        held = ""  # text that may be the start of a stop string
        for step in range(max_tokens):
            if len(tokens) >= engine.n_ctx and not source:
                self.finish_reason = "context"
                break
            token = engine.next_token(context, sampling, step)
            tokens.append(token)
            engine._cached = list(tokens)
            if engine.is_end(token):
                self.finish_reason = "stop"
                break
            if sampling.logprobs is not None:
                self.logprobs.append(engine.token_logprob(context, token, sampling.logprobs))
            self.generated_tokens += 1
            piece = engine.context_text([token])
            context += piece
            held += piece
            cut = min((held.find(s) for s in stop if s in held), default=-1)
            if cut >= 0:
                self.finish_reason = "stop"
                if held[:cut]:
                    yield held[:cut]
                return
            keep = max((k for s in stop for k in range(1, len(s)) if held.endswith(s[:k])), default=0)
            if len(held) > keep:
                yield held[: len(held) - keep]
                held = held[len(held) - keep :]
        else:
            self.finish_reason = "length"
        if held:
            yield held


class FakeBatcher:
    """Keeps up to `slots` requests in flight and finishes them last-in first-out, so results come back out of
    input order as a batching engine's do; each result is `run_one`'s (the one-at-a-time path)."""

    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.busy = 0
        self.peak_busy = 0

    def run(self, requests: Iterable[Request | object]) -> Iterator[Result]:
        window: list[Request] = []
        for req in requests:
            if req is not IDLE:
                window.append(req)
                self.busy = len(window)
                self.peak_busy = max(self.peak_busy, self.busy)
                self.engine.peak_in_flight = max(self.engine.peak_in_flight, self.busy)
            if window and (req is IDLE or len(window) >= self.engine.slots):
                yield from self._drain(window)
        yield from self._drain(window)

    def _drain(self, window: list[Request]) -> Iterator[Result]:
        while window:
            result = self.engine.run_one(window.pop())
            self.busy = len(window)
            yield result


class FakeModels:
    """What the CLI opens while the `fake_models` fixture is active: `path` is a model file to name with
    `-m`; `options` go to every FakeEngine made (architecture, fail_after); `engines` lists them in order."""

    def __init__(self, folder: Path):
        self.path = folder / "fake-model.gguf"
        self.path.write_bytes(b"GGUF fake model for the fast tier\n")
        self.options: dict = {}
        self.engines: list[FakeEngine] = []

    def load(self, path, **kwargs) -> FakeEngine:
        engine = FakeEngine(path, **kwargs, **self.options)
        self.engines.append(engine)
        return engine

    @property
    def last(self) -> FakeEngine:
        return self.engines[-1]


@pytest.fixture
def fake_models(tmp_path, monkeypatch) -> Iterator[FakeModels]:
    """Every model the library opens (the CLI's too) is a FakeEngine, through the public extension point
    `mental_edge.engine_loader`. The machine looks idle to the thread default, so records do not depend on the
    load (tests/test_cpu.py covers that) and no command waits to sample it."""
    models = FakeModels(tmp_path)
    monkeypatch.setattr("mental_edge.engine.threads.busy_cores", lambda seconds=0.0: 0.0)
    with engine_loader(models.load):
        yield models
