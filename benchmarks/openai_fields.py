"""What the server's OpenAI extras cost per generated token on the engine: log-probabilities with top-k, a JSON
grammar, penalties, against plain greedy decoding (the small test model, one request at a time).

    python benchmarks/openai_fields.py [--tokens 48] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

from bench_common import smollm2

from mental_edge.engine import PromptText, Sampling, Segment, load_engine
from mental_edge.engine.grammar import json_grammar

PROMPT = "Describe a cat as a JSON object with its name, age and colour:"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    engine = load_engine(smollm2(), n_ctx=512, threads=args.threads, slots=1)
    prompt = engine.encode(PromptText((Segment(PROMPT),)))
    cases = {
        "greedy": Sampling(),
        "logprobs, top 5": Sampling(logprobs=5),
        "logprobs, top 20": Sampling(logprobs=20),
        "json_object grammar": Sampling(grammar=json_grammar()),
        "frequency_penalty 1": Sampling(frequency_penalty=1.0),
    }
    base = None
    for name, sampling in cases.items():
        best, made = float("inf"), 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            gen = engine.generate(prompt, max_tokens=args.tokens, sampling=sampling)
            gen.text()
            best, made = min(best, time.perf_counter() - start), gen.generated_tokens
        per = best / max(made, 1) * 1000
        base = base or per
        print(f"{name:22s} {made:3d} tokens  {per:6.2f} ms/token  x{per / base:.2f}")
    engine.close()


if __name__ == "__main__":
    main()
