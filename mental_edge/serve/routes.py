"""`/v1/analyze` (the records `mental-edge analyze` writes) and OpenAI's `/v1/chat/completions` and
`/v1/completions`, with streaming as server-sent events."""

from __future__ import annotations

import asyncio
import json
import re

from fastapi import APIRouter
from fastapi import Request as HttpRequest
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from mental_edge.analysis import Analyzer
from mental_edge.analysis.runner import run_analysis
from mental_edge.engine import PromptText, Request, Sampling, Segment
from mental_edge.families import family_for
from mental_edge.io.readers import make_row  # the readers' own row rules: empty posts flagged, ids printable
from mental_edge.prompting import load_tasks
from mental_edge.prompting.chat_format import Message, chat_format_for
from mental_edge.serve.errors import ApiError
from mental_edge.serve.logprobs import TokenLog
from mental_edge.serve.schemas import AnalyzeRequest, ChatRequest, CompletionRequest, Post
from mental_edge.serve.shapes import Shape
from mental_edge.serve.worker import SharedEngine, TimedOut

router = APIRouter(prefix="/v1")
_SURROGATE = re.compile("[\ud800-\udfff]")


@router.post("/analyze")
def analyze(body: AnalyzeRequest, http: HttpRequest):
    """Label posts for tasks: one record per post and task, as `mental-edge analyze` writes them."""
    worker, settings = http.app.state.worker, http.app.state.settings
    rows = []
    for n, post in enumerate(body.posts, 1):
        row_id, text = (post.id, post.text) if isinstance(post, Post) else (str(n), post)
        _check_length(text, f"posts[{n - 1}]", settings.max_post_chars)
        _check_length(row_id, f"posts[{n - 1}].id", settings.max_post_chars)
        rows.append(make_row(row_id, text, "request", n))
    engine = SharedEngine(worker, settings.timeout)
    analyzer = Analyzer(
        engine,
        explain=body.explain,
        free=body.free,
        max_tokens=body.max_tokens,
        sampling=body.sampling(),
        prompt_format=body.prompt_format,
    )
    taskset = _taskset(http)
    language = family_for(engine.info.architecture).language
    tasks = [t for name in dict.fromkeys(body.tasks) for t in taskset.get(name, language=language)]
    records: list[dict] = []
    run_analysis(analyzer, rows, list(dict.fromkeys(tasks)), write=records.append)
    return {"records": records}


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, http: HttpRequest):
    """OpenAI-compatible chat, laid out by the model's own chat template (message text never becomes a
    control token)."""
    settings = http.app.state.settings
    engine = http.app.state.worker.engine
    sampling = await _sampling(body, engine)
    for i, m in enumerate(body.messages):
        _check_length(m.text(), f"messages[{i}].content", settings.max_post_chars)
    fmt = _chat_format(http)
    messages = [Message(m.role, m.text()) for m in body.messages]
    prompt = await run_in_threadpool(fmt.tokens, engine, messages)
    req = _generation(engine, prompt, body, sampling, stop=body.stops() + tuple(fmt.stop))
    return await _respond(http, req, body, "chat.completion")


@router.post("/completions")
async def completions(body: CompletionRequest, http: HttpRequest):
    """OpenAI-compatible raw completion of the prompt (BOS as the model file says, no template), as
    `mental-edge generate`."""
    engine = http.app.state.worker.engine
    sampling = await _sampling(body, engine)
    _check_length(body.prompt, "prompt", http.app.state.settings.max_post_chars)
    prompt = await run_in_threadpool(engine.encode, PromptText((Segment(body.prompt),)))  # as `generate` frames it
    req = _generation(engine, prompt, body, sampling, stop=body.stops())
    return await _respond(http, req, body, "text_completion", prompt_chars=len(body.prompt))


# -- helpers ----------------------------------------------------------------------------------------


def _check_length(text: str, field: str, limit: int) -> None:
    if len(text) > limit:
        raise ApiError(413, f"{field}: {len(text)} characters; this server takes at most {limit}")
    if _SURROGATE.search(text):  # JSON may escape a lone surrogate, which is no text the model can read
        raise ApiError(400, f"{field}: holds a lone surrogate (\\ud800-\\udfff), not text")


def _taskset(http):
    state = http.app.state
    if getattr(state, "taskset", None) is None:
        state.taskset = load_tasks()
    return state.taskset


def _chat_format(http):
    state = http.app.state
    if getattr(state, "chat_format", None) is None:
        state.chat_format = chat_format_for(state.worker.engine)
    return state.chat_format


async def _sampling(body, engine) -> Sampling:
    """The request's sampling, once every field it sent is one this server and engine honour (else 400 naming
    the field). A JSON schema becomes a grammar here (in a worker thread: a large one takes a moment)."""
    refusal = body.refusal()
    if refusal:
        raise ApiError(400, refusal)
    sampling = await run_in_threadpool(body.sampling)
    wanted = {
        "logprobs": sampling.logprobs is not None,
        "grammar": sampling.grammar is not None,
        "penalties": bool(sampling.frequency_penalty or sampling.presence_penalty),
    }
    fields = {"logprobs": "logprobs", "grammar": "response_format", "penalties": "frequency_penalty"}
    for feature, asked in wanted.items():
        if asked and feature not in engine.features:
            field = fields[feature]
            if feature == "penalties" and not body.frequency_penalty:
                field = "presence_penalty"
            raise ApiError(400, f"{field}: not supported by this model's engine ({engine.info.engine})")
    return sampling


def _generation(engine, prompt: list[int], body, sampling: Sampling, stop) -> Request:
    """A request that reads the prompt and generates (no candidates; the follow-up prompt is the prompt)."""
    if len(prompt) >= engine.n_ctx:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; the context holds {engine.n_ctx}")
    if not prompt:
        raise ApiError(400, "the prompt is empty")
    room = engine.n_ctx - len(prompt)
    max_tokens = body.most_tokens()
    asked = body.stops()
    if len(asked) > 4 or any(len(s) > 200 for s in asked):
        raise ApiError(400, "stop: at most 4 strings of at most 200 characters")
    return Request(
        prompt=prompt,
        follow=lambda scores: prompt,
        max_tokens=min(max_tokens or room, room),
        sampling=sampling,
        stop=stop,
    )


async def _respond(http, req: Request, body, kind: str, prompt_chars: int = 0):
    """The whole answer, or with `stream` its chunks as server-sent events (each with the log-probabilities
    of the tokens whose text it brings, when asked)."""
    engine = http.app.state.worker.engine
    events = _events(http.app.state.worker, req, http.app.state.settings.timeout, body.stream)
    log = TokenLog(engine.token_bytes, prompt_chars) if req.sampling.logprobs is not None else None
    shape = Shape(kind, engine.info.name, len(req.prompt), log)
    if not body.stream:
        async for event, value in events:
            if event == "done":
                _check_finished(value)
                return shape.whole(value)
        raise AssertionError("unreachable: the worker always ends a job")  # pragma: no cover
    usage = body.stream_options is not None and body.stream_options.include_usage

    async def sse():
        if kind == "chat.completion":
            yield {"data": json.dumps(shape.chunk(role=True))}
        try:
            async for event, value in events:
                if event == "token":
                    log.add(value)
                elif event == "text":
                    yield {"data": json.dumps(shape.chunk(text=value))}
                else:
                    _check_finished(value)
                    yield {"data": json.dumps(shape.chunk(done=value))}
                    if usage:
                        yield {"data": json.dumps(shape.usage_chunk(value))}
        except (TimedOut, ApiError) as exc:
            yield {"data": json.dumps({"error": {"message": str(exc), "type": "server_error"}})}
        yield {"data": "[DONE]"}

    return EventSourceResponse(sse(), ping=15)


def _check_finished(result) -> None:
    if result.finish_reason == "grammar":
        raise ApiError(
            400,
            f"response_format: after {result.generated_tokens} tokens the schema allows no token this model can write",
        )


def _events(worker, req: Request, timeout: float, stream: bool):
    """Submit now (a full queue answers 503 at once); then an async iterator of ("token", TokenLogprob) and
    ("text", piece) while streaming, and finally ("done", result). Leaving it early cancels the request."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def emit(kind, value):
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone
            req.cancelled = True

    if stream:
        req.on_text = lambda piece: emit("text", piece)
        if req.sampling.logprobs is not None:  # each token's before the text it is part of
            req.on_token = lambda record: emit("token", record)
    worker.submit(req, emit)
    return _drain(inbox, req, loop.time() + timeout, timeout)


async def _drain(inbox: asyncio.Queue, req: Request, deadline: float, timeout: float):
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(inbox.get(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                raise TimedOut(f"the request took longer than {timeout:g} s") from None
            if kind == "error":
                raise ApiError(400, value)
            yield kind, value
            if kind == "done":
                return
    finally:
        req.cancelled = True
