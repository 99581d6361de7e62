"""The real `openai` client against `mental-edge serve` (a subprocess on loopback, the small model): log-probabilities
in OpenAI's shapes with the engine's own values, JSON output that parses and fits its schema, penalties that
change a repetitive answer as OpenAI defines them, and every field the server does not honour refused by name.

References are independent of the server: the engine's `score` of the same tokens after the same prompt (one
request at a time, outside the server), jsonschema for the schema, and the penalty rule recomputed from the
reported log-probabilities.
"""

import json
from collections import Counter

import httpx
import jsonschema
import openai
import pytest
from support.served import AUTH, KEY, serving

from mental_edge.engine import PromptText, Sampling, Segment, load_engine
from mental_edge.prompting.chat_format import Message, chat_format_for

CTX = 512
CHAT = [{"role": "user", "content": "Name three fruits."}]
POST = "Post: 'I cry every night and can't get out of bed.' Does the poster show signs of depression? Answer in JSON."
SCHEMA = {
    "type": "object",
    "properties": {
        "depressed": {"type": "boolean"},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["depressed", "confidence"],
    "additionalProperties": False,
}
REPEAT = "one, one, one, one, one, one,"


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory):
    with serving(smollm2_gguf, tmp_path_factory.mktemp("openai-home"), "--ctx", str(CTX), "--timeout", "120") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    engine = load_engine(smollm2_gguf, n_ctx=CTX, slots=1)
    yield engine
    engine.close()


def _own_logprobs(engine, prompt, steps):
    """The engine's scores of each generated token and of each alternative, after the same prompt and the
    tokens before it: steps are (chosen id, [alternative ids])."""
    chosen = [c for c, _ in steps]
    conts = [chosen[: k + 1] for k in range(len(steps))]
    conts += [chosen[:k] + [alt] for k, (_, alts) in enumerate(steps) for alt in alts]
    scores = dict(zip(map(tuple, conts), engine.score(prompt, conts)))
    before = [0.0] + [scores[tuple(chosen[: k + 1])] for k in range(len(steps) - 1)]
    own = [scores[tuple(chosen[: k + 1])] - before[k] for k in range(len(steps))]
    alts = [[scores[tuple(chosen[:k] + [alt])] - before[k] for alt in alts] for k, (_, alts) in enumerate(steps)]
    return own, alts


def _steps_of(engine, prompt, n: int, top: int):
    """The token ids (chosen, alternatives) of the engine's own greedy answer, one request alone: what the
    server's tokens are checked to be, by their bytes, before their scores are compared."""
    gen = engine.generate(prompt, max_tokens=n, sampling=Sampling(logprobs=top))
    gen.text()
    return [(r.token, [t for t, _ in r.top]) for r in gen.logprobs]


# -- log-probabilities -------------------------------------------------------------------------------------


def test_chat_logprobs_are_the_models_own_in_openais_shape(client, reference):
    answer = client.chat.completions.create(
        model="any", messages=CHAT, max_tokens=12, logprobs=True, top_logprobs=3
    ).choices[0]
    content = answer.logprobs.content
    assert answer.finish_reason == "length" and len(content) == 12
    assert b"".join(bytes(t.bytes) for t in content).decode() == answer.message.content
    for t in content:
        assert t.token == bytes(t.bytes).decode() and len(t.top_logprobs) == 3
        tops = [a.logprob for a in t.top_logprobs]
        assert tops == sorted(tops, reverse=True) and t.top_logprobs[0].token == t.token  # greedy: the likeliest
    prompt = chat_format_for(reference).tokens(reference, [Message(**m) for m in CHAT])
    steps = _steps_of(reference, prompt, 12, 3)
    assert [reference.token_bytes(c) for c, _ in steps] == [bytes(t.bytes) for t in content]
    assert [[reference.token_bytes(a) for a in alts] for _, alts in steps] == [
        [bytes(a.bytes) for a in t.top_logprobs] for t in content
    ]
    own, alts = _own_logprobs(reference, prompt, steps)
    assert [t.logprob for t in content] == pytest.approx(own, abs=2e-3)
    flat = [a.logprob for t in content for a in t.top_logprobs]
    assert flat == pytest.approx([v for step in alts for v in step], abs=2e-3)


def test_streamed_chat_logprobs_add_up_to_the_whole_answers(client):
    asked = {"model": "any", "messages": CHAT, "max_tokens": 12, "logprobs": True, "top_logprobs": 2}
    whole = client.chat.completions.create(**asked).choices[0].logprobs.content
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.logprob, [a.token for a in t.top_logprobs]) for t in streamed] == [
        (t.token, t.logprob, [a.token for a in t.top_logprobs]) for t in whole
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12  # include_usage honoured


def test_completion_logprobs_are_the_models_own_in_openais_shape(client, reference):
    prompt = "The capital of France is"
    choice = client.completions.create(model="any", prompt=prompt, max_tokens=10, logprobs=2).choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == len(lp.token_logprobs) == 10
    assert lp.text_offset[0] == len(prompt)  # offsets count from the prompt's start, as OpenAI's do
    assert all(b - a == len(t) for a, b, t in zip(lp.text_offset, lp.text_offset[1:], lp.tokens))
    assert all(
        t in top and len(top) <= 3 and top[t] == v for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)
    )
    tokens = reference.encode(PromptText((Segment(prompt),)))
    steps = [(c, []) for c, _ in _steps_of(reference, tokens, 10, 0)]
    assert [reference.token_bytes(c).decode() for c, _ in steps] == lp.tokens
    own, _ = _own_logprobs(reference, tokens, steps)
    assert lp.token_logprobs == pytest.approx(own, abs=2e-3)
    streamed = list(client.completions.create(model="any", prompt=prompt, max_tokens=10, logprobs=2, stream=True))
    assert [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens] == lp.tokens
    assert [o for c in streamed if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset] == lp.text_offset


def test_tokens_of_a_stop_string_are_not_reported(client):
    full = client.completions.create(model="any", prompt="The capital of France is", max_tokens=10, logprobs=0)
    tokens = full.choices[0].logprobs.tokens
    stop = tokens[3].strip() or tokens[4].strip()
    cut = client.completions.create(
        model="any", prompt="The capital of France is", max_tokens=10, logprobs=0, stop=stop
    )
    choice = cut.choices[0]
    assert choice.finish_reason == "stop" and stop not in choice.text
    assert "".join(choice.logprobs.tokens).startswith(choice.text) and len(choice.logprobs.tokens) < len(tokens)
    assert choice.logprobs.tokens == tokens[: len(choice.logprobs.tokens)]


# -- response_format -----------------------------------------------------------------------------------------


def test_json_schema_output_parses_and_fits_the_schema(client):
    messages = [{"role": "user", "content": POST}]
    plain = client.chat.completions.create(model="any", messages=messages, max_tokens=60).choices[0].message.content
    with pytest.raises((json.JSONDecodeError, jsonschema.ValidationError)):  # what the grammar changes
        jsonschema.validate(json.loads(plain), SCHEMA)
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    answer = client.chat.completions.create(model="any", messages=messages, max_tokens=60, response_format=fmt)
    assert answer.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMA)
    chunks = client.chat.completions.create(
        model="any", messages=messages, max_tokens=60, response_format=fmt, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == answer.choices[0].message.content


def test_json_object_output_is_a_json_object(client):
    messages = [{"role": "user", "content": 'Reply with a JSON object that has one key, "fruit", naming a fruit.'}]
    answer = client.chat.completions.create(
        model="any", messages=messages, max_tokens=40, response_format={"type": "json_object"}
    )
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


@pytest.mark.parametrize(
    "schema, field",
    [
        ({"$ref": "https://example.com/schema.json"}, "response_format.json_schema.schema.$ref"),
        ({"type": "array", "minItems": 10**6}, "response_format.json_schema.schema.minItems"),
        ({"enum": []}, "response_format.json_schema.schema"),
        ({"type": "string", "pattern": "^a{100000}$"}, "response_format.json_schema.schema.pattern"),
        ({"type": "string", "pattern": "^\\x00$"}, "response_format"),  # no token writes it: refused, not crashed
    ],
)
def test_a_schema_the_server_cannot_honour_answers_400_naming_it(client, server, schema, field):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="any", messages=CHAT, max_tokens=8, response_format=fmt)
    assert err.value.status_code == 400 and err.value.body["message"].startswith(field + ":")
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


# -- penalties ---------------------------------------------------------------------------------------------------


def _steps(lp):
    """(chosen, its logprob, {alternative: logprob}) per token of a completion's logprobs."""
    return list(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs))


def _follows_the_penalty_rule(steps, frequency: float, presence: float) -> bool:
    """Each chosen token is the likeliest of those reported once OpenAI's penalties are taken off:
    logprob - count * frequency - (count > 0) * presence, counted over the tokens generated before it."""
    seen = Counter()
    for chosen, logprob, top in steps:

        def penalised(token, value):
            return value - seen[token] * frequency - (seen[token] > 0) * presence

        if any(penalised(t, v) > penalised(chosen, logprob) + 1e-4 for t, v in top.items()):
            return False
        seen[chosen] += 1
    return True


@pytest.mark.parametrize("frequency, presence", [(1.0, 0.0), (0.0, 2.0)])
def test_penalties_change_a_repetitive_answer_as_openai_defines_them(client, frequency, presence):
    asked = {"model": "any", "prompt": REPEAT, "max_tokens": 24, "logprobs": 5}
    plain = client.completions.create(**asked).choices[0]
    penalised = client.completions.create(**asked, frequency_penalty=frequency, presence_penalty=presence).choices[0]
    assert plain.text.count("one") >= 10 and penalised.text.count("one") < plain.text.count("one") / 2
    assert _follows_the_penalty_rule(_steps(penalised.logprobs), frequency, presence)
    assert not _follows_the_penalty_rule(_steps(plain.logprobs), frequency, presence)  # the check can fail


# -- fields not honoured ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, extra, field",
    [
        ("chat", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ("chat", {"tool_choice": "auto"}, "tool_choice"),
        ("chat", {"n": 2}, "n"),
        ("chat", {"logit_bias": {"42": 5}}, "logit_bias"),
        ("chat", {"user": "someone"}, "user"),
        ("chat", {"top_logprobs": 2}, "top_logprobs"),  # without logprobs=true
        ("chat", {"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
        ("chat", {"extra_body": {"mirostat": 2}}, "mirostat"),
        ("chat", {"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "messages[0].name"),
        (
            "chat",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].type",
        ),
        (
            "chat",
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "foo": 1}}},
            "response_format.json_schema.foo",
        ),
        ("completions", {"echo": True}, "echo"),
        ("completions", {"suffix": "end"}, "suffix"),
        ("completions", {"best_of": 2}, "best_of"),
    ],
)
def test_a_field_the_server_does_not_honour_answers_400_naming_it(client, endpoint, extra, field):
    with pytest.raises(openai.BadRequestError) as err:
        if endpoint == "chat":
            client.chat.completions.create(**{"model": "any", "messages": CHAT, "max_tokens": 4, **extra})
        else:
            client.completions.create(**{"model": "any", "prompt": "Hi", "max_tokens": 4, **extra})
    assert err.value.status_code == 400 and err.value.body["message"].startswith(field + ":")


def test_text_parts_and_null_fields_are_read(server, client):
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "Name three "}, {"type": "text", "text": "fruits."}]}
    ]
    joined = client.chat.completions.create(model="any", messages=parts, max_tokens=8).choices[0].message.content
    assert joined == client.chat.completions.create(model="any", messages=CHAT, max_tokens=8).choices[0].message.content
    body = {"messages": CHAT, "max_tokens": 8, "user": None, "tools": None, "temperature": None}
    response = httpx.post(f"{server}/v1/chat/completions", headers=AUTH, json=body, timeout=120)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == joined


# -- the encoder-decoder engines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"logprobs": 1}, "logprobs"),
        ({"extra_body": {"response_format": {"type": "json_object"}}}, "response_format"),  # also on completions
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
    ],
)
def test_mentalbarts_engine_refuses_what_it_cannot_do_by_name(bart_served, extra, field):
    client = openai.OpenAI(base_url=f"{bart_served}/v1", api_key=KEY, max_retries=0, timeout=120)
    assert client.completions.create(model="any", prompt="I feel alone.", max_tokens=4).choices[0].text is not None
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="any", prompt="I feel alone.", max_tokens=4, **extra)
    assert err.value.body["message"].startswith(f"{field}: not supported by this model's engine (CTranslate2")


@pytest.fixture(scope="module")
def bart_served(imhi_dir, tmp_path_factory):
    from mental_edge.convert import convert_checkpoint
    from support.seq2seq_tiny import write_bart

    folder = write_bart(tmp_path_factory.mktemp("bart") / "tiny-bart", imhi_dir)
    ct2 = convert_checkpoint(folder, tmp_path_factory.mktemp("bart-ct2") / "f32", outtype="f32")
    with serving(ct2, tmp_path_factory.mktemp("bart-home"), "--threads", "1") as url:
        yield url


def test_t5_completion_logprobs_are_its_engines_own_scores(imhi_dir, tmp_path_factory):
    from mental_edge.convert import convert_checkpoint
    from support.seq2seq_tiny import write_t5

    folder = write_t5(tmp_path_factory.mktemp("t5") / "tiny-t5", imhi_dir)
    gguf = convert_checkpoint(folder, tmp_path_factory.mktemp("t5-gguf") / "t5.f32.gguf", outtype="f32")
    query = "Consider this post: I feel alone. Question: Does the poster suffer from loneliness?"
    with serving(gguf, tmp_path_factory.mktemp("t5-home"), "--threads", "1") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        lp = client.completions.create(model="any", prompt=query, max_tokens=6, logprobs=2).choices[0].logprobs
    engine = load_engine(gguf, threads=1)
    try:
        prompt = engine.encode(PromptText((Segment(query),)))
        steps = _steps_of(engine, prompt, 6, 0)
        assert [engine.token_bytes(c).decode("utf-8", "backslashreplace") for c, _ in steps] == lp.tokens
        chosen = [c for c, _ in steps]
        totals = engine.score(prompt.source, [chosen[: k + 1] for k in range(len(chosen))])
        own = [b - a for a, b in zip([0.0, *totals], totals)]
        assert lp.token_logprobs == pytest.approx(own, abs=2e-3)
    finally:
        engine.close()
