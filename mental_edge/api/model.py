"""`load` and `Model`: a model file opened once, then analyses, prompts, generations and chats on it.

A Model serves one call at a time: a call from a second thread waits until the running one ends; a call made
while the same thread is still inside one (an `iter_analyze` not read to its end) is refused in one line. A call
interrupted (Ctrl-C in a notebook cell, an exception in the caller's loop) returns nothing half-made and leaves
the model as a fresh one: whatever the engine cached is forgotten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set, Sized
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

from mental_edge.analysis import DEFAULT_MAX_TOKENS, Analyzer
from mental_edge.analysis.runner import RunSummary, iter_records
from mental_edge.api.inputs import Posts, input_rows
from mental_edge.api.loading import Say, open_engine
from mental_edge.api.records import Record
from mental_edge.engine import Engine, ModelInfo, PromptText, Sampling, Segment, Seq2SeqPrompt
from mental_edge.errors import MentalEdgeError
from mental_edge.families import family_for
from mental_edge.io.readers import InputRow
from mental_edge.prompting import Task, TaskSet, load_tasks
from mental_edge.prompting.chat_format import Message, chat_format_for
from mental_edge.prompting.query_format import form_for, query_format_for

TaskChoice = str | Task | Sequence[str | Task]
Messages = Sequence[Message | Mapping[str, str]]


def load(
    model: str | Path | None = None,
    *,
    ctx: int | None = None,
    threads: int | None = None,
    gpu_layers: int | None = None,
    slots: int | None = None,
    sequential: bool = False,
    exact: bool = False,
    prompts: str | Path | None = None,
    say: Say | None = None,
    allow_architectures: Sequence[str] = (),
) -> Model:
    """Open a model: a store name, a GGUF file or a CTranslate2 folder (None: the store's only model).

    `ctx` context size in tokens; `threads` CPU threads (default: the cores free now); `gpu_layers` layers on the
    GPU; `slots` requests kept in flight (default: sized from the model and the memory free), `sequential` one at
    a time; `exact` batched results equal the sequential ones to the bit (slower on a CPU); `prompts` a folder of
    task files and templates adding to the package's; `allow_architectures` GGUF architectures to run beyond the
    built-in families (docs/model-files.md). Close it (or use `with`) to free llama.cpp's memory."""
    engine = open_engine(
        model,
        n_ctx=ctx,
        threads=threads,
        gpu_layers=gpu_layers,
        slots=1 if sequential else slots,
        exact=exact,
        say=say,
        allow_architectures=allow_architectures,
    )
    return Model(engine, prompts=prompts)


class Model:
    """A loaded model (see `load`); `Model(engine)` wraps an engine of one's own."""

    def __init__(self, engine: Engine, *, prompts: str | Path | None = None):
        self.engine = engine
        self.taskset: TaskSet = load_tasks(prompts)
        self._lock = threading.Lock()
        self._user: int | None = None  # the thread inside a call now
        self._closed = False

    @property
    def info(self) -> ModelInfo:
        """The model file: path, name, architecture, quantization, sha256, training context."""
        return self.engine.info

    # -- analysis -------------------------------------------------------------------------------

    def analyze(
        self,
        posts: Posts,
        tasks: TaskChoice = "DR",
        *,
        explain: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        free: bool = False,
        sampling: Sampling | None = None,
        prompt_format: str | None = None,
        progress: bool = False,
    ) -> list[Record]:
        """Records for every post and task, in input order (see `iter_analyze` for the arguments)."""
        return list(
            self.iter_analyze(
                posts,
                tasks,
                explain=explain,
                max_tokens=max_tokens,
                free=free,
                sampling=sampling,
                prompt_format=prompt_format,
                progress=progress,
            )
        )

    def iter_analyze(
        self,
        posts: Posts,
        tasks: TaskChoice = "DR",
        *,
        explain: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        free: bool = False,
        sampling: Sampling | None = None,
        prompt_format: str | None = None,
        progress: bool = False,
    ) -> Iterator[Record]:
        """Each post's records as they are made, in input order: for long inputs.

        `posts`: one string, a list or any iterable of strings (ids "1", "2", ...), (id, text) pairs, a mapping
        or a pandas Series (its index becomes the ids). `tasks`: a task name, a family ("Irf"), "all", a Task, or a
        list of them. `explain`: an explanation after each label (`max_tokens` at most); `free`: the model answers
        freely and its label is parsed (the published way); `sampling`: greedy by default; `prompt_format`: how
        the query is wrapped (default: the model family's); `progress`: a progress bar (tqdm's notebook bar in
        Jupyter)."""
        chosen = self._tasks(tasks)
        rows = input_rows(posts)
        total = len(posts) if isinstance(posts, Sized) and not isinstance(posts, str) else None
        with _progress(progress, total) as bar:
            yield from self.iter_rows(
                rows,
                chosen,
                on_row=bar.update,
                explain=explain,
                max_tokens=max_tokens,
                free=free,
                sampling=sampling,
                prompt_format=prompt_format,
            )

    def iter_rows(
        self,
        rows: Iterable[InputRow],
        tasks: Sequence[Task] = (),
        *,
        taskset: TaskSet | None = None,
        done: Set[tuple[str, str]] = frozenset(),
        limit: int | None = None,
        on_row: Callable[[], None] | None = None,
        summary: RunSummary | None = None,
        explain: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        free: bool = False,
        sampling: Sampling | None = None,
        prompt_format: str | None = None,
    ) -> Iterator[Record]:
        """The records of input rows as mental_edge.io.readers gives them (files, stdin), in input order: what
        `iter_analyze`, `evaluate`, `mental-edge analyze` and Ray's workers run on. `taskset`: rows are IMHI
        queries, each row's own task and gold label read from it by these tasks (`model.taskset`: the package's
        and `prompts`'; `tasks`, if given, filters them); `done`: (id, task) pairs already
        written (a resumed output), skipped; `limit`: at most this many rows; `summary` counts rows and skips."""
        analyzer = Analyzer(
            self.engine,
            explain=explain,
            free=free,
            max_tokens=max_tokens,
            sampling=sampling or Sampling(),
            prompt_format=prompt_format,
        )
        with self._use():
            for record in iter_records(
                analyzer, rows, tasks, taskset=taskset, done=done, limit=limit, on_row=on_row, summary=summary
            ):
                yield Record.from_dict(record)

    def tasks(self) -> list[Task]:
        """The tasks this model runs by default (its family's language), and any from `prompts`."""
        language = family_for(self.info.architecture).language
        return self.taskset.get("all", language=language)

    def _tasks(self, tasks: TaskChoice) -> list[Task]:
        language = family_for(self.info.architecture).language
        items = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
        if not items:
            raise MentalEdgeError("tasks: name at least one task (e.g. 'DR', or 'all')")
        return [t for item in items for t in ([item] if isinstance(item, Task) else self.taskset.get(item, language))]

    # -- prompts and text -----------------------------------------------------------------------

    def prompt(self, task: str | Task, post: str, *, form: str | None = None) -> str:
        """The exact text the model is fed for `post` on `task`: its form, its family's query wrapper, BOS where
        the model file adds one."""
        chosen = task if isinstance(task, Task) else self.taskset.task(task)
        fmt = query_format_for(self.info)
        query = chosen.render(post, form or form_for(self.info, chosen.language))
        segments = fmt.segments(query)
        with self._use():
            tokens = self.engine.tokenize_segments(segments, add_bos=fmt.add_bos)
            bos = self.engine.token_text(tokens[0]) if fmt.add_bos and self.info.add_bos else ""
        return bos + "".join(segment.text for segment in segments)

    @overload
    def generate(
        self, text: str, *, max_tokens: int = ..., sampling: Sampling | None = ..., stream: Literal[False] = ...
    ) -> str: ...
    @overload
    def generate(
        self, text: str, *, max_tokens: int = ..., sampling: Sampling | None = ..., stream: Literal[True]
    ) -> Iterator[str]: ...
    def generate(
        self, text: str, *, max_tokens: int = 128, sampling: Sampling | None = None, stream: bool = False
    ) -> str | Iterator[str]:
        """The model's raw continuation of `text` (BOS as the model file says, no template); `stream`: the
        pieces as they come."""
        pieces = self._generate(lambda: self.engine.encode(PromptText((Segment(text),))), max_tokens, sampling, ())
        return pieces if stream else "".join(pieces)

    @overload
    def chat(
        self,
        messages: Messages,
        *,
        max_tokens: int = ...,
        sampling: Sampling | None = ...,
        stream: Literal[False] = ...,
    ) -> str: ...
    @overload
    def chat(
        self, messages: Messages, *, max_tokens: int = ..., sampling: Sampling | None = ..., stream: Literal[True]
    ) -> Iterator[str]: ...
    def chat(
        self, messages: Messages, *, max_tokens: int = 256, sampling: Sampling | None = None, stream: bool = False
    ) -> str | Iterator[str]:
        """The assistant's answer to a conversation ({"role": "system" | "user" | "assistant", "content": ...}
        or Message), laid out by the model's own chat template, else its family's layout."""
        conversation = [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages]
        layout = chat_format_for(self.engine)
        pieces = self._generate(lambda: layout.tokens(self.engine, conversation), max_tokens, sampling, layout.stop)
        return pieces if stream else "".join(pieces)

    def _generate(
        self,
        prompt: Callable[[], list[int] | Seq2SeqPrompt],
        max_tokens: int,
        sampling: Sampling | None,
        stop: Sequence[str],
    ) -> Iterator[str]:
        with self._use():
            generation = self.engine.generate(
                prompt(), max_tokens=max_tokens, sampling=sampling or Sampling(), stop=stop
            )
            try:
                yield from generation
            finally:
                generation.close()

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the model's memory (llama.cpp's weights and cache); the Model cannot be used after."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.engine.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<mental_edge.Model {self.info.name} ({self.info.architecture}, {self.info.quantization})>"

    @contextmanager
    def _use(self) -> Iterator[None]:
        if self._user == threading.get_ident():
            raise MentalEdgeError(
                "this Model is still inside another call in this thread (an iter_analyze or stream not read to "
                "its end): finish or close that first"
            )
        with self._lock:  # a call from another thread waits here for the running one to end
            if self._closed:
                raise MentalEdgeError("this Model is closed")
            self._user = threading.get_ident()
            try:
                yield
            except BaseException:  # interrupted, or the caller stopped reading: start the next call afresh
                self.engine.reset()
                raise
            finally:
                self._user = None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextmanager
def _progress(enabled: bool, total: int | None) -> Iterator[Any]:
    """tqdm.auto's bar (a widget in Jupyter, text in a terminal), or nothing."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="post") as bar:
        yield bar
