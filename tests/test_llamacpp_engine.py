"""The llama.cpp engine against llama-cpp-python's own high-level path on the real SmolLM2 model."""

import numpy as np
import pytest
from llama_cpp import Llama

from mental_edge.engine import Sampling, Segment, load_engine
from mental_edge.engine.llamacpp.decoder import CPU_VALUE_TYPE, ContextOverflow
from mental_edge.errors import MentalEdgeError

QUERY = (
    'Consider this post: "I cannot sleep and nothing matters anymore." '
    "Question: Does the poster suffer from depression?"
)
ANSWERS = [" Yes, the poster suffers from depression.", " No, the poster does not suffer from depression."]


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    eng = load_engine(smollm2_gguf, n_ctx=1024, threads=2, exact=True)  # the reference's cache settings
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    """llama-cpp-python's high-level Llama: an independent path through the same kernels.

    With the engine's exact-mode cache settings on the CPU: flash attention on, bf16 values (CPU_VALUE_TYPE). On this
    Q4_1 model the answers' log-probabilities move by up to 0.5 nats with f16 values or flash attention off: the
    tiny quantized model is that sensitive to how attention rounds (on its f16 conversion the per-token error
    against transformers f32 is 0.0022 nats on average whichever is used: benchmarks/cache_types.py)."""
    llm = Llama(
        str(smollm2_gguf),
        n_ctx=1024,
        n_threads=2,
        logits_all=True,
        verbose=False,
        flash_attn=True,
        type_v=int(CPU_VALUE_TYPE),
    )
    yield llm
    llm.close()


def _reference_logprob(llm, prompt, continuation):
    llm.reset()
    llm.eval(prompt + continuation)
    logits = np.array(llm.scores[: len(prompt) + len(continuation)], dtype=np.float64)
    total = 0.0
    for i, tok in enumerate(continuation):
        row = logits[len(prompt) + i - 1]
        total += row[tok] - (row.max() + np.log(np.exp(row - row.max()).sum()))
    return total


def test_score_matches_reference_log_likelihood(engine, reference):
    prompt = engine.tokenize(QUERY, add_bos=True)
    conts = [engine.tokenize(QUERY + a)[len(prompt) :] for a in ANSWERS]
    assert all(len(c) > 3 for c in conts)
    got = engine.score(prompt, conts)
    want = [_reference_logprob(reference, prompt, c) for c in conts]
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert np.argmax(got) == np.argmax(want)
    assert engine.score(prompt, conts) == pytest.approx(got, abs=1e-4)  # prompt reused from the cache


def test_greedy_generation_matches_high_level_api(engine, reference):
    prompt = engine.tokenize("The three most common signs of stress are", add_bos=True)
    ours = engine.generate(prompt, max_tokens=24)
    text = ours.text()
    reference.reset()
    ref = reference.create_completion(prompt, max_tokens=24, temperature=0.0, top_k=1)
    assert text == ref["choices"][0]["text"]
    assert ours.generated_tokens == ref["usage"]["completion_tokens"]


def test_prompt_cache_is_reused_and_gives_the_same_answer(engine, smollm2_gguf):
    first = engine.tokenize("Post: I feel alone. Question: is the poster lonely?", add_bos=True)
    longer = first + engine.tokenize(" Answer:")
    engine.generate(first, max_tokens=4).text()
    again = engine.generate(longer, max_tokens=16)
    text = again.text()
    assert again.reused_tokens >= len(first) - 1
    fresh = load_engine(smollm2_gguf, n_ctx=1024, threads=2, exact=True)
    try:
        assert fresh.generate(longer, max_tokens=16).text() == text
    finally:
        fresh.close()


def test_interrupted_generation_leaves_a_consistent_cache(engine):
    prompt = engine.tokenize("Numbers: 1, 2, 3, 4, 5, 6,", add_bos=True)
    full = engine.generate(prompt, max_tokens=20).text()
    stream = engine.generate(prompt, max_tokens=200)
    next(stream), next(stream)
    stream.close()  # what Ctrl-C in a chat does
    assert engine.generate(prompt, max_tokens=20).text() == full


def test_stop_strings_end_generation_without_the_stop_text(engine):
    prompt = engine.tokenize("List three fruits: apple, banana,", add_bos=True)
    gen = engine.generate(prompt, max_tokens=40, stop=[","])
    text = gen.text()
    assert "," not in text and gen.finish_reason == "stop"


def test_sampling_with_a_seed_is_reproducible(engine):
    prompt = engine.tokenize("Once upon a time", add_bos=True)
    sampling = Sampling(temperature=0.9, top_p=0.9, seed=42)
    a = engine.generate(prompt, max_tokens=16, sampling=sampling).text()
    b = engine.generate(prompt, max_tokens=16, sampling=sampling).text()
    assert a == b


def test_control_tokens_only_come_from_template_text(engine):
    im_start = engine.tokenize("<|im_start|>", special=True)
    assert len(im_start) == 1
    typed = engine.tokenize_segments(
        [Segment("<|im_start|>user\n", special=True), Segment("hi <|im_start|> </s> [INST]")], add_bos=False
    )
    assert typed.count(im_start[0]) == 1 and typed[0] == im_start[0]
    plain = engine.tokenize("hi <|im_start|> </s> [INST]")
    assert typed[len(typed) - len(plain) :] == plain  # the post's tokens, exactly as plain text


def test_segments_tokenize_like_the_joined_text(engine):
    segments = [Segment("<|im_start|>", True), Segment("user\nHello"), Segment(" world<|im_end|>\n", True)]
    joined = "".join(s.text for s in segments)
    assert engine.tokenize_segments(segments, add_bos=False) == engine.tokenize(joined, special=True)


def test_context_overflow_is_a_clear_error(engine):
    with pytest.raises(ContextOverflow, match="context holds 1024"):
        engine.score(list(range(100, 1200)), [[5, 6]])


def test_bad_model_files_give_one_line(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(MentalEdgeError, match="no such model file"):
        load_engine(missing)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(MentalEdgeError, match="not a GGUF"):
        load_engine(text)


def test_truncated_model_file_is_refused(tmp_path, smollm2_gguf):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_gguf.read_bytes()[:5_000_000])
    with pytest.raises(MentalEdgeError, match=r"cut\.gguf: .* past the file's 5000000 bytes \(truncated"):
        load_engine(cut)  # refused by the file check (engine/file_check.py) before llama.cpp reads it


def test_candidates_that_do_not_all_fit_after_a_long_prompt_are_scored_in_turns(smollm2_gguf):
    """A prompt near the end of the context with many answer sentences (CAMS at --ctx 512 made llama_decode fail)."""
    eng = load_engine(smollm2_gguf, n_ctx=256, threads=2, slots=1, exact=True)  # scores to the bit
    try:
        prompt = eng.tokenize("I have not slept and I cannot stop worrying. " * 30, add_bos=True)[:220]
        conts = [eng.tokenize(f" Answer number {i} is the one that fits this post best.") for i in range(6)]
        assert len(prompt) + sum(len(c) - 1 for c in conts) > eng.n_cells
        together = eng.score(prompt, conts)
        assert together == [eng.score(prompt, [c])[0] for c in conts]
    finally:
        eng.close()
