"""The Engine contract (mental_edge/engine/base.py), held by FakeEngine and by the real llama.cpp engine alike:
the same checks on both, so the fast tier's fake cannot drift from what the runtime gets from a real model.
The fake runs in the fast tier; the real engine's case is slow (it loads SmolLM2)."""

import ast
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine

from mental_edge.engine import Engine, PromptText, Request, Sampling, Segment, load_engine
from mental_edge.engine.llamacpp.batcher import BatchEngine
from mental_edge.engine.llamacpp.common import LlamaCppEngine
from mental_edge.engine.llamacpp.decoder import LlamaEngine
from mental_edge.engine.llamacpp.t5 import LlamaT5Engine

PROMPT = "My favourite foods are"


@pytest.fixture(params=["fake", pytest.param("llama.cpp", marks=pytest.mark.slow)], scope="module")
def engine(request, tmp_path_factory):
    if request.param == "fake":
        yield FakeEngine(tmp_path_factory.mktemp("fake") / "fake.gguf", slots=2)
        return
    path = request.getfixturevalue("smollm2_gguf")
    real = load_engine(path, n_ctx=512, threads=2, slots=2)
    yield real
    real.close()


def test_control_tokens_come_from_special_segments_only(engine):
    typed = engine.tokenize_segments([Segment("a post with <|im_start|> in it")])
    marked = engine.tokenize_segments([Segment("a post with"), Segment("<|im_start|>", special=True), Segment(" in")])
    before = engine.tokenize_segments([Segment("a post with")])
    control = marked[len(before)]
    assert marked[: len(before)] == before and engine.token_text(control) == "<|im_start|>"
    assert control not in typed and engine.detokenize(typed) == "a post with <|im_start|> in it"


def test_encode_frames_once_and_puts_the_answer_after_the_query(engine):
    framed = engine.encode(PromptText((Segment(PROMPT),), " pizza", separator=""))
    plain = engine.encode(PromptText((Segment(PROMPT),), " pizza", separator="", frame=False))
    assert framed == engine.frame(plain) and engine.frame(framed) == framed
    assert engine.detokenize(framed) == PROMPT + " pizza" and len(framed) == len(plain) + engine.info.add_bos


def test_generation_counts_finish_reasons_and_the_cached_prefix(engine):
    prompt = engine.encode(PromptText((Segment(PROMPT),)))
    gen = engine.generate(prompt, max_tokens=6)
    text = gen.text()
    assert gen.prompt_tokens == len(prompt) and 0 < gen.generated_tokens <= 6
    assert gen.finish_reason == "length" if gen.generated_tokens == 6 else gen.finish_reason == "stop"
    again = engine.generate(prompt, max_tokens=6)
    assert again.text() == text and 0 < again.reused_tokens < len(prompt)  # greedy: the same; the prefix cached
    seeded = Sampling(temperature=1.0, seed=1)
    sampled = engine.generate(prompt, max_tokens=6, sampling=seeded).text()
    assert engine.generate(prompt, max_tokens=6, sampling=seeded).text() == sampled  # a seed repeats its text


def test_a_stop_string_ends_the_text_before_it(engine):
    prompt = engine.encode(PromptText((Segment(PROMPT),)))
    text = engine.generate(prompt, max_tokens=12).text()
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), text
    gen = engine.generate(prompt, max_tokens=12, stop=[stop])
    assert gen.text() == text[: text.find(stop)] and gen.finish_reason == "stop"


def test_the_greedy_token_scores_at_least_any_other_candidate(engine):
    prompt = engine.encode(PromptText((Segment(PROMPT),)))
    first = engine.generate(prompt, max_tokens=1)
    piece = first.text()
    candidates = [engine.tokenize(piece)] + [engine.tokenize(w) for w in (" the", " and", " of", " sleep")]
    candidates = [c for c in candidates if len(c) == 1]
    scores = engine.score(prompt, candidates)
    assert len(candidates) > 2 and scores[0] == max(scores) and all(s < 0 for s in scores)


def test_run_requests_gives_each_request_its_own_result_as_run_one_does(engine):
    prompt = engine.encode(PromptText((Segment(PROMPT),)))
    answers = [engine.tokenize(w) for w in (" pizza", " rice and beans")]
    requests = [
        Request(prompt, answers, follow=lambda scores, n=n: prompt + answers[n % 2], max_tokens=4, key=n)
        for n in range(4)
    ]
    results = {r.key: r for r in engine.run_requests(requests)}
    assert sorted(results) == [0, 1, 2, 3]
    for n, req in enumerate(requests):
        alone = engine.run_one(req)
        assert results[n].scores == pytest.approx(alone.scores, abs=1e-4) and len(alone.scores) == 2
        assert results[n].text == alone.text and results[n].generated_tokens == alone.generated_tokens
        assert results[n].finish_reason == alone.finish_reason in ("stop", "length")


def test_logprobs_name_each_generated_token_with_the_greedy_one_on_top(engine):
    assert "logprobs" in engine.features
    prompt = engine.encode(PromptText((Segment(PROMPT),)))
    plain = engine.generate(prompt, max_tokens=5)
    text = plain.text()
    gen = engine.generate(prompt, max_tokens=5, sampling=Sampling(logprobs=3))
    assert gen.text() == text and len(gen.logprobs) == gen.generated_tokens == plain.generated_tokens
    for record in gen.logprobs:
        assert len(record.top) == 3 and record.top[0] == (record.token, pytest.approx(record.logprob, abs=1e-4))
        assert [lp for _, lp in record.top] == sorted((lp for _, lp in record.top), reverse=True)
        assert record.logprob <= 0
    assert engine.detokenize([r.token for r in gen.logprobs]) == text


# -- what the package's own engines show of themselves (read with ast: no model) ---------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "mental_edge"


def test_the_llama_cpp_engine_offers_the_whole_batch_interface(smollm2_gguf):
    """The Batcher is typed against batcher.BatchEngine (a runtime-checkable Protocol: every method and
    attribute present); the decoder-only engine is one, the fake engine (no batching) is not."""
    engine = load_engine(smollm2_gguf, n_ctx=256, slots=2)
    try:
        assert isinstance(engine, LlamaEngine) and isinstance(engine, BatchEngine)
        assert engine.batch_runner() is not None
    finally:
        engine.close()
    assert not isinstance(FakeEngine(), BatchEngine)


def test_the_batcher_touches_no_private_member_of_the_engine():
    tree = ast.parse((PACKAGE / "engine" / "llamacpp" / "batcher.py").read_text(encoding="utf-8"))
    private = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "e"  # self.e is the engine
    ]
    assert private == []


def test_the_t5_engine_is_no_decoder_only_engine_and_runs_one_request_at_a_time():
    assert not issubclass(LlamaT5Engine, LlamaEngine) and issubclass(LlamaT5Engine, LlamaCppEngine)
    assert LlamaT5Engine.run_requests is Engine.run_requests and LlamaT5Engine.batch_runner is Engine.batch_runner


def test_the_server_asks_the_engine_instead_of_sniffing_attributes():
    text = (PACKAGE / "serve" / "worker.py").read_text(encoding="utf-8")
    assert "hasattr(" not in text and "llama_batch" not in text and "batch_runner()" in text
