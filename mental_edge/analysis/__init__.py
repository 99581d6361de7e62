"""Deciding a task's label for a post, then explaining it.

The label is chosen by scoring every allowed answer sentence under the model (the prompt read once, the
candidates side by side), so it is always a valid label and comes with a probability for each label. The
explanation is then generated after `{label sentence} Reasoning:`, so it argues for the label it sits under.
With `free=True` the model answers on its own, as the published evaluation did, and the label is parsed from
the answer (None when no rule reads it: reported as unparsed, never counted as a class).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mental_edge.engine import Engine, PromptText, Request, Result, Sampling, Seq2SeqPrompt
from mental_edge.prompting import Task
from mental_edge.prompting.query_format import QueryFormat, form_for, query_format_for
from mental_edge.version import __version__

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


@dataclass(eq=False)
class _TaskKey:
    """What a request carries for the analyzer: where its result goes, and what the result needs."""

    entry: dict  # the post's entry: its results, in task order, and how many are still running
    index: int
    task: Task
    form: str
    flags: list[str]
    same: tuple = ()  # what makes the request what it is: two tasks of a post with equal `same` are one request
    twins: list[_TaskKey] = field(default_factory=list)  # other tasks of the post this request answers too
    done: Result | None = None  # the engine's result, once in (a twin may come after it)


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
        """One result per task, one task after the other, streaming explanations to `on_text(task, piece)`.
        Tasks on the same post share the post's cache: the engine reuses the longest common prefix, and the
        templates put the post before the question."""
        ((_, results),) = self._analyze_stream([(None, post, tasks)], sequential=True, on_text=on_text)
        return results

    def analyze_stream(self, items: Iterable[tuple[object, str | None, Sequence[Task]]]):
        """(key, post, tasks) in, (key, results) out in the same order; a None post passes through as None.
        Runs as many requests at once as the engine keeps in flight (its `slots`)."""
        return self._analyze_stream(items, sequential=False, on_text=None)

    def form(self, task: Task) -> str:
        return form_for(self.engine.info, task.language)

    def run_info(self) -> dict:
        info = self.engine.info
        return {
            "model": info.name,
            "model_sha256": info.sha256,
            "quantization": info.quantization,
            "architecture": info.architecture,
            "engine": info.engine,
            "mental_edge": __version__,
            "mode": "free" if self.free else "scored",
            "explain": self.explain and not self.free,
            "prompt_format": self.format.name,
            "max_tokens": self.max_tokens,
            "sampling": self.sampling.as_record(),
            **self.engine.settings,
        }

    # -- requests ---------------------------------------------------------------------------------

    def _analyze_stream(self, items, sequential: bool, on_text):
        pending: deque[dict] = deque()  # posts in input order, waiting for their tasks' results

        def requests():
            for key, post, tasks in items:
                entry = {"key": key, "results": None if post is None else [None] * len(tasks), "left": 0}
                pending.append(entry)
                if post is None:
                    continue
                asked: dict[tuple, _TaskKey] = {}  # this post's requests so far, by what they ask
                for i, task in enumerate(tasks):
                    req = self._request(post, task, on_text, entry, i)
                    if isinstance(req, TaskResult):  # decided without the model (empty or unfit post)
                        entry["results"][i] = req
                        continue
                    twin = asked.get(req.key.same) if on_text is None else None
                    if twin is not None and twin.done is not None:  # two tasks asking the same (DR and CLP)
                        entry["results"][i] = self._result(twin.done, req.key)
                        continue
                    entry["left"] += 1
                    if twin is not None:  # one request answers both
                        twin.twins.append(req.key)
                        continue
                    asked[req.key.same] = req.key
                    yield req

        if sequential:  # one request after the other, in order, whatever the engine could keep in flight
            done_requests = (self.engine.run_one(req) for req in requests())
        else:
            done_requests = self.engine.run_requests(requests())
        for result in done_requests:
            entry = result.key.entry
            result.key.done = result
            for key in (result.key, *result.key.twins):
                entry["results"][key.index] = self._result(result, key)
                entry["left"] -= 1
            while pending and pending[0]["left"] == 0 and _complete(pending[0]):
                done = pending.popleft()
                yield done["key"], done["results"]
        while pending:
            done = pending.popleft()
            yield done["key"], done["results"]

    def _request(self, post: str, task: Task, on_text, entry: dict, index: int) -> Request[_TaskKey] | TaskResult:
        form = self.form(task)
        if not post.strip():
            return TaskResult(task.name, form, None, None, None, flags=["empty"])
        post, flags = self._fit(post, task, form)
        if post is None:
            return TaskResult(task.name, form, None, None, None, flags=flags)
        query = task.render(post, form)
        common = {
            "max_tokens": self.max_tokens,
            "sampling": self.sampling,
            "key": _TaskKey(entry, index, task, form, flags, self._same(query, task, form)),
            "on_text": (lambda piece: on_text(task.name, piece)) if on_text else None,
        }
        if self.free:
            prompt = self._tokens(query)
            return Request(prompt, follow=lambda scores: prompt, **common)
        prompt, candidates = self.candidates(query, task, form)
        follow = None
        if self.explain:
            follow = lambda scores: self._tokens(query, task.explain_prefix(_best(task, scores), form))  # noqa: E731
        return Request(prompt, candidates, follow, **common)

    def _same(self, query: str, task: Task, form: str) -> tuple:
        """What a request asks: its query, and unless the answer is free, the labels in order, their answer
        sentences and what an explanation follows. The engine's results depend on nothing else (the sampler's
        seed is the analyzer's), so two tasks of a post with equal ones get equal results from one request."""
        if self.free:
            return (query,)
        labels = tuple(task.labels)
        answers = tuple(task.answer(label, form) for label in labels)
        follows = tuple(task.explain_prefix(label, form) for label in labels) if self.explain else ()
        return (query, labels, answers, follows)

    def candidates(self, query: str, task: Task, form: str) -> tuple[list[int], list[list[int]]]:
        """The prompt read once and each label's answer sentence after it: for an encoder-decoder model the
        encoder's input and each answer as the decoder's output; else the tokens all the answers share, then
        the rest of each."""
        answers = [self._tokens(query, task.answer(label, form)) for label in task.labels]
        if self.engine.encoder_decoder:
            return list(answers[0].source), [list(a.target) for a in answers]
        shared = _common_prefix(answers)
        return answers[0][:shared], [a[shared:] for a in answers]

    def _result(self, res: Result[_TaskKey], key: _TaskKey) -> TaskResult:
        task, form, flags = key.task, key.form, key.flags
        if self.free:
            answer = res.text.strip()
            label = task.parse_answer(answer, form)
            head, marker, reasoning = answer.partition(task.reasoning_marker)
            return TaskResult(
                task.name,
                form,
                label,
                None,
                reasoning.strip() if marker else None,
                answer=answer,
                flags=flags + ([] if label is not None else ["unparsed"]),
            )
        probabilities = _softmax(task.labels, res.scores)
        explanation = res.text.strip() if self.explain else None
        return TaskResult(task.name, form, _best(task, res.scores), probabilities, explanation, flags=flags)

    def label_probabilities(self, query: str, task: Task, form: str) -> dict[str, float]:
        """P(label) from the log-likelihood of each label's answer sentence after the query."""
        prompt, candidates = self.candidates(query, task, form)
        return _softmax(task.labels, self.engine.score(prompt, candidates))

    def _tokens(self, query: str, answer: str | None = None) -> list[int] | Seq2SeqPrompt:
        """The query (and an answer's start) as the engine takes it: see `Engine.encode`."""
        fmt = self.format
        return self.engine.encode(PromptText(tuple(fmt.segments(query)), answer, fmt.separator, fmt.add_bos))

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
            head, tail = post_tokens[: keep // 2], post_tokens[len(post_tokens) - (keep - keep // 2) :]
            post = self.engine.detokenize(head).rstrip() + CUT_MARKER + self.engine.detokenize(tail).lstrip()
            flags = ["truncated"]
        return None, ["too long: the context cannot hold the question and an answer"]


def _softmax(labels: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return {label: w / total for label, w in zip(labels, weights)}


def _best(task: Task, scores: Sequence[float]) -> str:
    return task.labels[max(range(len(scores)), key=scores.__getitem__)]


def _complete(entry: dict) -> bool:
    return entry["results"] is None or all(r is not None for r in entry["results"])


def _length(tokens: list[int] | Seq2SeqPrompt) -> int:
    return len(tokens.source) if isinstance(tokens, Seq2SeqPrompt) else len(tokens)


def _common_prefix(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the prefix all lists share, leaving each at least one token to score."""
    limit = min(len(t) for t in token_lists) - 1
    n = 0
    while n < limit and all(t[n] == token_lists[0][n] for t in token_lists):
        n += 1
    return n


def analyze_post(
    engine: Engine,
    tasks: Sequence[Task],
    post: str,
    *,
    explain=True,
    free=False,
    max_tokens=DEFAULT_MAX_TOKENS,
    sampling=Sampling(),
    on_text=None,
) -> list[TaskResult]:
    """Analyse one post for each task (see Analyzer)."""
    analyzer = Analyzer(engine, explain=explain, free=free, max_tokens=max_tokens, sampling=sampling)
    return analyzer.analyze(post, tasks, on_text)
