"""Deciding a task's label for a post, then explaining it.

The label is chosen by scoring every allowed answer sentence under the model (the prompt read once, the
candidates side by side), so it is always a valid label and comes with a probability for each label. The
explanation is then generated after `{label sentence} Reasoning:`, so it argues for the label it sits under.
With `free=True` the model answers on its own, as the published evaluation did, and the label is parsed from
the answer (None when no rule reads it: reported as unparsed, never counted as a class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mental_edge import __version__
from mental_edge.engine import Engine, Sampling, Seq2SeqPrompt
from mental_edge.prompt_format import QueryFormat, form_for, query_format_for
from mental_edge.tasks import Task

CUT_MARKER = " [...] "  # stands where the middle of a post too long for the context was cut
DEFAULT_MAX_TOKENS = 256


@dataclass
class TaskResult:
    task: str
    form: str
    label: str | None
    probabilities: dict[str, float] | None
    explanation: str | None
    answer: str | None = None  # the model's own answer text (free mode)
    flags: list[str] = field(default_factory=list)


@dataclass
class Analyzer:
    """Analyses posts with one engine and one set of settings; `run_info()` records those settings."""

    engine: Engine
    explain: bool = True
    free: bool = False
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling: Sampling = Sampling()
    prompt_format: str | None = None

    def __post_init__(self):
        self.format: QueryFormat = query_format_for(self.engine.info, self.prompt_format)

    def analyze(self, post: str, tasks: Sequence[Task], on_text: Callable[[str, str], None] | None = None):
        """One result per task. Tasks on the same post share the post's cache: the engine reuses the longest
        common prefix, and the templates put the post before the question."""
        if not post or not post.strip():
            return [TaskResult(t.name, self.form(t), None, None, None, flags=["empty"]) for t in tasks]
        return [self._analyze_one(post, task, on_text) for task in tasks]

    def form(self, task: Task) -> str:
        return form_for(self.engine.info, task.language)

    def run_info(self) -> dict:
        info = self.engine.info
        return {
            "model": info.name, "model_sha256": info.sha256, "quantization": info.quantization,
            "architecture": info.architecture, "engine": info.engine, "mental_edge": __version__,
            "mode": "free" if self.free else "scored", "explain": self.explain and not self.free,
            "prompt_format": self.format.name, "max_tokens": self.max_tokens,
            "sampling": self.sampling.as_record(), **self.engine.settings,
        }

    # -- one task -------------------------------------------------------------------------------

    def _analyze_one(self, post: str, task: Task, on_text) -> TaskResult:
        form = self.form(task)
        post, flags = self._fit(post, task, form)
        if post is None:
            return TaskResult(task.name, form, None, None, None, flags=flags)
        query = task.render(post, form)
        stream = (lambda piece: on_text(task.name, piece)) if on_text else None
        if self.free:
            result = self._free_answer(query, task, form, stream)
        else:
            result = self._scored(query, task, form, stream)
        result.flags = flags + result.flags
        return result

    def _scored(self, query: str, task: Task, form: str, stream) -> TaskResult:
        probabilities = self.label_probabilities(query, task, form)
        label = max(probabilities, key=probabilities.get)
        explanation = None
        if self.explain:
            tokens = self._tokens(query, task.explain_prefix(label, form))
            explanation = self._generate(tokens, stream).strip()
        return TaskResult(task.name, form, label, probabilities, explanation)

    def label_probabilities(self, query: str, task: Task, form: str) -> dict[str, float]:
        """P(label) from the log-likelihood of each label's answer sentence after the query."""
        candidates = [self._tokens(query, task.answer(label, form)) for label in task.labels]
        if self.engine.encoder_decoder:  # the query is encoded once; each answer is the decoder's output
            scores = self.engine.score(candidates[0].source, [c.target for c in candidates])
        else:
            shared = _common_prefix(candidates)
            scores = self.engine.score(candidates[0][:shared], [c[shared:] for c in candidates])
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        return {label: w / total for label, w in zip(task.labels, weights)}

    def _free_answer(self, query: str, task: Task, form: str, stream) -> TaskResult:
        answer = self._generate(self._tokens(query), stream).strip()
        label = task.parse_answer(answer, form)
        head, marker, reasoning = answer.partition(task.reasoning_marker)
        explanation = reasoning.strip() if marker else None
        return TaskResult(task.name, form, label, None, explanation, answer=answer,
                          flags=[] if label is not None else ["unparsed"])

    def _tokens(self, query: str, answer: str | None = None) -> list[int] | Seq2SeqPrompt:
        if self.engine.encoder_decoder:  # the answer goes to the decoder, not after the query
            source = self.engine.tokenize_segments(self.format.segments(query), add_bos=self.format.add_bos)
            return Seq2SeqPrompt(tuple(source), tuple(self.engine.tokenize(answer)) if answer else ())
        return self.engine.tokenize_segments(self.format.segments(query, answer), add_bos=self.format.add_bos)

    def _generate(self, tokens: list[int], stream) -> str:
        pieces = []
        for piece in self.engine.generate(tokens, max_tokens=self.max_tokens, sampling=self.sampling):
            pieces.append(piece)
            if stream:
                stream(piece)
        return "".join(pieces)

    # -- long posts -----------------------------------------------------------------------------

    def _fit(self, post: str, task: Task, form: str) -> tuple[str | None, list[str]]:
        """Cut the middle out of a post too long for the context, leaving room for the answer."""
        if self.engine.encoder_decoder:  # the encoder reads the query alone; answers have the decoder's room
            room = self.engine.n_ctx
        else:
            longest_answer = max(len(self._tokens("", task.answer(label, form))) for label in task.labels)
            room = self.engine.n_ctx - longest_answer - (self.max_tokens if self.explain or self.free else 0) - 8
        flags: list[str] = []
        for _ in range(4):
            excess = _length(self._tokens(task.render(post, form))) - room
            if excess <= 0:
                return post, flags
            post_tokens = self.engine.tokenize(post)
            keep = len(post_tokens) - excess - len(self.engine.tokenize(CUT_MARKER)) - 4
            if keep < 2:
                break
            head, tail = post_tokens[: keep // 2], post_tokens[len(post_tokens) - (keep - keep // 2):]
            post = self.engine.detokenize(head).rstrip() + CUT_MARKER + self.engine.detokenize(tail).lstrip()
            flags = ["truncated"]
        return None, ["too long: the context cannot hold the question and an answer"]


def _length(tokens: list[int] | Seq2SeqPrompt) -> int:
    return len(tokens.source) if isinstance(tokens, Seq2SeqPrompt) else len(tokens)


def _common_prefix(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the prefix all lists share, leaving each at least one token to score."""
    limit = min(len(t) for t in token_lists) - 1
    n = 0
    while n < limit and all(t[n] == token_lists[0][n] for t in token_lists):
        n += 1
    return n


def analyze_post(engine: Engine, tasks: Sequence[Task], post: str, *, explain=True, free=False,
                 max_tokens=DEFAULT_MAX_TOKENS, sampling=Sampling(), on_text=None) -> list[TaskResult]:
    """Analyse one post for each task (see Analyzer)."""
    analyzer = Analyzer(engine, explain=explain, free=free, max_tokens=max_tokens, sampling=sampling)
    return analyzer.analyze(post, tasks, on_text)
