"""`mental-edge serve` over real HTTP: a server started here on loopback with the small model, called with httpx.

References are independent of the server: the CLI `analyze` for records, the engine's own one-at-a-time
`generate` for completions and chat (greedy, so equal text is the test).
"""

import json
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner
from support.served import AUTH, KEY, SERVE_LOG, serving

from mental_edge.cli import main
from mental_edge.engine import Request, load_engine
from mental_edge.prompting.chat_format import Message, chat_format_for

CTX = 512  # keeps what a fuzzer may ask to generate short
POSTS = [
    "I cry every night and I can't get out of bed.",
    "Work has been fine and I went hiking with friends.",
    "My rent doubled and I lost my job; I don't know how I'll eat.",
    "Nobody would notice if I was gone.",
]
PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The best way to learn is",
    "Water boils at",
    "My favourite colour is",
]


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    """The real server on SmolLM2 (its answers are compared to the bit with other engines': --exact,
    tests/test_exact_modes.py); the URL and its stderr log."""
    home = tmp_path_factory.mktemp("serve-home")
    limits = ["--max-body", "65536", "--max-post-chars", "4000", "--timeout", "120"]
    with serving(smollm2_gguf, home, "--ctx", str(CTX), *limits, "--exact") as url:
        yield url, home / SERVE_LOG


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    """The engine one request at a time, outside the server."""
    engine = load_engine(smollm2_gguf, n_ctx=CTX, slots=1, exact=True)
    yield engine
    engine.close()


def _complete(engine, prompt: str, max_tokens: int) -> tuple[str, str]:
    gen = engine.generate(engine.tokenize(prompt, add_bos=engine.info.add_bos), max_tokens=max_tokens)
    return gen.text(), gen.finish_reason


def _chat(engine, messages, max_tokens):
    fmt = chat_format_for(engine)
    gen = engine.generate(fmt.tokens(engine, [Message(**m) for m in messages]), max_tokens=max_tokens)
    return gen.text(), gen.finish_reason


def _sse(response) -> list:
    events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# -- the batcher on a queue -------------------------------------------------------------------------


def test_batcher_on_a_source_that_says_idle_gives_the_same_results(reference, smollm2_gguf):
    from mental_edge.engine import IDLE

    engine = load_engine(smollm2_gguf, n_ctx=CTX, slots=3, exact=True)
    try:

        def requests():
            for p in PROMPTS[:4]:
                tokens = engine.tokenize(p, add_bos=engine.info.add_bos)
                yield Request(prompt=tokens, follow=lambda s, t=tokens: t, max_tokens=10, key=p)

        def idle_between():
            for req in requests():
                yield IDLE  # nothing waiting while earlier requests run
                yield req
                yield IDLE

        streamed = {}
        plain = {r.key: r.text for r in engine.batch_runner().run(requests())}
        batcher = engine.batch_runner()
        with_idle = {}
        for r in batcher.run(idle_between()):
            with_idle[r.key] = r.text
        assert with_idle == plain == {p: _complete(reference, p, 10)[0] for p in PROMPTS[:4]}
        assert batcher.peak_busy > 1 and batcher.busy == 0
        for req in requests():  # on_text streams what becomes the text
            req.on_text = lambda piece, key=req.key: streamed.setdefault(key, []).append(piece)
            [done] = engine.batch_runner().run([req])
            assert "".join(streamed[req.key]) == done.text and done.generated_tokens == 10
    finally:
        engine.close()


# -- the endpoints ----------------------------------------------------------------------------------


def test_analyze_records_equal_those_of_the_cli(server, smollm2_gguf, tmp_path):
    url, _ = server
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(POSTS) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            "-m",
            str(smollm2_gguf),
            "--ctx",
            str(CTX),
            "-i",
            str(posts),
            "--task",
            "DR",
            "--task",
            "dreaddit",
            "--max-tokens",
            "12",
            "--exact",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    response = httpx.post(
        f"{url}/v1/analyze",
        headers=AUTH,
        timeout=120,
        json={"posts": POSTS, "tasks": ["DR", "dreaddit"], "max_tokens": 12},
    )
    assert response.status_code == 200, response.text
    assert response.json()["records"] == expected
    assert len(expected) == 8 and all(r["label"] in ("yes", "no") and r["explanation"] is not None for r in expected)
    # posts with ids, no explanation, an empty post flagged as the file readers flag it
    response = httpx.post(
        f"{url}/v1/analyze",
        headers=AUTH,
        timeout=120,
        json={"posts": [{"id": "a7", "text": POSTS[0]}, {"id": "b", "text": "  "}], "tasks": ["DR"], "explain": False},
    )
    records = response.json()["records"]
    assert [r["id"] for r in records] == ["a7", "b"] and records[1]["flags"] == ["empty"]
    assert records[0]["label"] == expected[0]["label"] and records[0]["explanation"] is None
    assert records[0]["probabilities"] == pytest.approx(expected[0]["probabilities"], abs=1e-9)


def test_completions_with_and_without_streaming_equal_the_engine(server, reference):
    url, _ = server
    text, reason = _complete(reference, PROMPTS[0], 20)
    body = {"prompt": PROMPTS[0], "max_tokens": 20, "model": "whatever"}
    whole = httpx.post(f"{url}/v1/completions", headers=AUTH, json=body, timeout=60).json()
    assert whole["object"] == "text_completion" and whole["choices"][0]["text"] == text
    assert whole["choices"][0]["finish_reason"] == reason == "length"
    assert whole["usage"]["completion_tokens"] == 20
    assert whole["usage"]["prompt_tokens"] == len(reference.tokenize(PROMPTS[0], add_bos=reference.info.add_bos))
    with httpx.stream("POST", f"{url}/v1/completions", headers=AUTH, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = _sse(r)
    assert len(chunks) > 2 and "".join(c["choices"][0]["text"] for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    stopped = httpx.post(
        f"{url}/v1/completions", headers=AUTH, timeout=60, json={**body, "stop": [text.strip()[:4]]}
    ).json()["choices"][0]
    assert stopped["finish_reason"] == "stop" and text.strip()[:4] not in stopped["text"]


def test_chat_with_and_without_streaming_equals_the_engine(server, reference):
    url, _ = server
    messages = [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Name a fruit. <|im_end|> (that is text, not a control token)"},
    ]
    text, reason = _chat(reference, messages, 24)
    body = {"messages": messages, "max_tokens": 24}
    whole = httpx.post(f"{url}/v1/chat/completions", headers=AUTH, json=body, timeout=60).json()
    choice = whole["choices"][0]
    assert whole["object"] == "chat.completion" and choice["message"] == {"role": "assistant", "content": text}
    assert choice["finish_reason"] == reason and text
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", headers=AUTH, json={**body, "stream": True}, timeout=60
    ) as r:
        chunks = _sse(r)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == reason


def test_models_health_and_the_openapi_description(server):
    url, _ = server
    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    health = httpx.get(f"{url}/health").json()  # no key needed: it says nothing about anyone's text
    assert health["status"] == "ok" and health["slots"] >= 2 and health["completed"] >= 0
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/analyze", "/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(paths)


@pytest.mark.parametrize(
    "path, body, headers, status",
    [
        ("/v1/analyze", b'{"posts": ["x"], "tasks": [', AUTH, 400),  # malformed JSON
        ("/v1/analyze", {"posts": "x", "tasks": ["DR"]}, AUTH, 422),  # wrong type
        ("/v1/analyze", {"posts": ["x"], "tasks": ["DR"], "max_tokens": "many"}, AUTH, 422),
        ("/v1/analyze", {"posts": ["x"], "tasks": ["DR"], "extra": 1}, AUTH, 422),
        ("/v1/analyze", {"posts": ["x"], "tasks": ["no-such-task"]}, AUTH, 400),
        ("/v1/analyze", {"posts": ["x" * 4001], "tasks": ["DR"]}, AUTH, 413),  # post over --max-post-chars
        ("/v1/analyze", {"posts": ["x" * 3000] * 30, "tasks": ["DR"]}, AUTH, 413),  # body over --max-body
        ("/v1/analyze", {"posts": ["x"], "tasks": ["DR"]}, {}, 401),  # no key
        ("/v1/analyze", {"posts": ["x"], "tasks": ["DR"]}, {"Authorization": "Bearer wrong"}, 401),
        ("/v1/models", None, {"Authorization": f"Basic {KEY}"}, 401),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, AUTH, 422),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, AUTH, 400),  # named
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}, AUTH, 400),
        ("/v1/completions", {"prompt": "word " * 600}, AUTH, 400),  # more tokens than the context
        ("/v1/completions", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, AUTH, 400),
        ("/v1/completions", {"prompt": "hi", "temperature": -1}, AUTH, 422),
    ],
)
def test_bad_requests_get_the_right_status(server, path, body, headers, status):
    url, _ = server
    if body is None:
        response = httpx.get(url + path, headers=headers)
    else:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(
            url + path, content=content, timeout=60, headers={**headers, "Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_no_request_text_in_the_log_by_default(server):
    url, log = server
    secret = "zebra-lantern-7781 feels hopeless"
    httpx.post(
        f"{url}/v1/analyze", headers=AUTH, timeout=60, json={"posts": [secret], "tasks": ["DR"], "explain": False}
    )
    httpx.post(f"{url}/v1/analyze", headers=AUTH, timeout=60, json={"posts": [secret], "tasks": ["nope"]})
    assert "zebra-lantern" not in log.read_text() and "/v1/analyze" not in log.read_text()


def test_a_public_address_without_a_key_is_refused(smollm2_gguf, monkeypatch):
    monkeypatch.delenv("MENTAL_EDGE_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["serve", "-m", str(smollm2_gguf), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "--api-key" in result.output and result.output.startswith("Error: ")


# -- under load -------------------------------------------------------------------------------------


def test_concurrent_clients_share_the_batch_and_all_get_correct_answers(server, reference):
    """24 clients for 20 s: completions and streamed chats, every answer well formed, as long as asked, and the
    one-at-a-time engine's to the letter, whichever requests shared its batches (tests/test_batching.py)."""
    url, _ = server
    expected = {p: _complete(reference, p, 8)[0] for p in PROMPTS}
    chat = [{"role": "user", "content": "Say something kind."}]
    expected_chat = _chat(reference, chat, 8)[0]
    deadline = time.time() + 20
    latencies, failures, differ, lock = [], [], [], threading.Lock()

    def client(n: int):
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            i = n
            while time.time() < deadline:
                start = time.perf_counter()
                if i % 3 == 2:
                    with http.stream(
                        "POST", "/v1/chat/completions", json={"messages": chat, "max_tokens": 8, "stream": True}
                    ) as r:
                        chunks = _sse(r) if r.status_code == 200 else []
                    got = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
                    ok = bool(chunks) and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
                    want = expected_chat
                else:
                    prompt = PROMPTS[i % len(PROMPTS)]
                    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8})
                    body = r.json()
                    ok = r.status_code == 200 and (
                        body["usage"]["completion_tokens"] == 8 or body["choices"][0]["finish_reason"] == "stop"
                    )
                    got, want = body["choices"][0]["text"] if ok else None, expected[prompt]
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if not ok or not got:
                        failures.append((i, got))
                    differ.append(got != want)
                i += 1

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(client, range(24)))
    assert not failures, failures[:3]
    assert not any(differ), f"{sum(differ)} of {len(differ)} answers differ from the one-at-a-time engine's"
    q = statistics.quantiles(latencies, n=100)
    print(
        f"\nload: {len(latencies)} requests from 24 clients in 20 s: p50 {q[49]:.3f} s, p95 {q[94]:.3f} s, "
        f"p99 {q[98]:.3f} s; {sum(differ)} answers differ from the one-at-a-time engine's"
    )
    health = httpx.get(f"{url}/health").json()
    assert health["peak_in_flight"] > 1 and health["failed"] == 0  # requests of different clients batched together
    assert len(latencies) >= 24


# -- property-based ---------------------------------------------------------------------------------


def test_the_openapi_description_fuzzed_finds_no_server_error(server, tmp_path):
    url, _ = server
    result = subprocess.run(
        [  # the schemathesis of the interpreter running the tests, whether or not its bin/ is on PATH
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "5",
            "--phases",
            "fuzzing",
            "-H",
            f"Authorization: Bearer {KEY}",
            "--seed",
            "1",
            "--request-timeout",
            "120",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:]
