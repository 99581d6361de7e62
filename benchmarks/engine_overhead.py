"""Engine overhead: prompt reading, scoring, generation and a batched analysis run through mental-edge, timed by
the wall clock around each call, against llama.cpp's own timings for the same work in the same run.

Two llama.cpp-side figures per phase:
- llama_perf: `llama_perf_context` (t_p_eval + t_eval). It times from a decode's start to the next synchronisation
  (reading logits), so a little Python time between the two counts as llama.cpp's.
- in llama_decode: the wall clock around each `llama_decode` call (a CPU backend computes inside the call).
The ratio wall / in-decode is mental-edge's cost over llama.cpp's (target: within 5%, i.e. <= 1.05). llama_perf
is printed for comparison but is not reliable here: it counts a step's time only up to the next synchronisation
and books every 2-row step (mental-edge pairs a lone output row with a scratch row) as prompt processing.

    python benchmarks/engine_overhead.py [--model PATH] [--threads N] [--posts N] [--max-tokens N] [--slots N]
"""

from __future__ import annotations

import argparse
import time

import llama_cpp
from bench_common import imhi_posts, load_line, smollm2

from mental_edge.analysis import Analyzer
from mental_edge.engine import Sampling, load_engine
from mental_edge.prompting import load_tasks
from mental_edge.prompting.query_format import query_format_for


class DecodeClock:
    """Wraps the engine context's decode to add up the time spent inside llama_decode."""

    def __init__(self, engine):
        self.seconds = 0.0
        ctx = engine._ctx
        inner = ctx.decode

        def decode(batch):
            start = time.perf_counter()
            try:
                return inner(batch)
            finally:
                self.seconds += time.perf_counter() - start

        ctx.decode = decode


def measure(engine, clock, work) -> dict:
    """Run work() and return wall seconds, llama_perf seconds, seconds in llama_decode and work's count."""
    engine.reset_perf()
    clock.seconds = 0.0
    start = time.perf_counter()
    count = work()
    llama_cpp.llama_synchronize(engine._ctx.ctx)  # llama_perf books a decode's time at the next synchronisation
    wall = time.perf_counter() - start
    perf = engine.perf()
    return {"wall": wall, "perf": (perf["prompt_ms"] + perf["gen_ms"]) / 1e3, "decode": clock.seconds, "n": count}


def each(engine, clock, items, prepare, work) -> dict:
    """measure() summed over items, with prepare(item) run untimed before each."""
    total = {"wall": 0.0, "perf": 0.0, "decode": 0.0, "n": 0}
    for item in items:
        prepare(item)
        llama_cpp.llama_synchronize(engine._ctx.ctx)  # so its decode is not booked in the timing below
        for key, value in measure(engine, clock, lambda item=item: work(item)).items():
            total[key] += value
    return total


def prompts(engine, posts, task):
    fmt = query_format_for(engine.info)
    return [engine.tokenize_segments(fmt.segments(task.render(p, "instruction")), add_bos=fmt.add_bos) for p in posts]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--posts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--slots", type=int, default=4, help="slots for the batched analysis phase")
    args = ap.parse_args()
    model = args.model or smollm2()
    task = load_tasks().task("DR")
    posts = imhi_posts("DR", args.posts)
    print(
        f"model {model.name if hasattr(model, 'name') else model}, {args.threads} threads, {len(posts)} DR posts, "
        f"{args.max_tokens} new tokens at most; {load_line()}"
    )

    rows = []
    engine = load_engine(model, threads=args.threads, slots=1, n_ctx=2048)
    clock = DecodeClock(engine)
    toks = prompts(engine, posts, task)
    engine.generate(toks[0], max_tokens=1).text()  # warm-up: weights paged in, buffers allocated

    def read(t):
        gen = engine.generate(t, max_tokens=0)
        gen.text()
        return gen.prompt_tokens - gen.reused_tokens

    rows.append(("prompt reading", "tokens", each(engine, clock, toks, lambda t: engine._forget(), read)))

    analyzer = Analyzer(engine, explain=False)
    candidates = [
        analyzer._tokens(task.render(p, "instruction"), task.answer(label, "instruction"))
        for p in posts
        for label in task.labels
    ]

    def score():
        n = 0
        for i in range(0, len(candidates), len(task.labels)):
            group = candidates[i : i + len(task.labels)]
            shared = min(len(c) for c in group) - 1
            while any(c[:shared] != group[0][:shared] for c in group):
                shared -= 1
            engine.score(group[0][:shared], [c[shared:] for c in group])
            n += 1
        return n

    rows.append(("label scoring", "posts", measure(engine, clock, score)))

    def prime(t):
        engine.generate(t, max_tokens=0).text()  # the prompt is read before the timing

    def generate(t):
        gen = engine.generate(t, max_tokens=args.max_tokens, sampling=Sampling())
        gen.text()
        return gen.generated_tokens

    rows.append(("generation", "tokens", each(engine, clock, toks, prime, generate)))
    engine.close()

    engine = load_engine(model, threads=args.threads, slots=args.slots, n_ctx=2048)
    clock = DecodeClock(engine)
    analyzer = Analyzer(engine, max_tokens=args.max_tokens)
    list(analyzer.analyze_stream([(0, posts[0], [task])]))  # warm-up

    def analyze():
        return sum(1 for _ in analyzer.analyze_stream((i, p, [task]) for i, p in enumerate(posts)))

    rows.append((f"analysis, {args.slots} slots", "posts", measure(engine, clock, analyze)))
    engine.close()

    print(
        f"{'phase':<22}{'count':>12}{'wall s':>9}{'llama_perf s':>14}{'in decode s':>13}"
        f"{'wall/perf':>11}{'wall/decode':>13}{'rate (wall)':>16}{'rate (perf)':>16}"
    )
    for name, unit, m in rows:
        print(
            f"{name:<22}{m['n']:>6} {unit:<5}{m['wall']:>9.3f}{m['perf']:>14.3f}{m['decode']:>13.3f}"
            f"{m['wall'] / m['perf']:>11.3f}{m['wall'] / m['decode']:>13.3f}"
            f"{m['n'] / m['wall']:>10.1f} {unit}/s{m['n'] / m['perf']:>10.1f} {unit}/s"
        )
    worst = max(m["wall"] / m["decode"] for _, _, m in rows)
    verdict = "met" if worst <= 1.05 else "NOT met"
    print(f"target: wall within 5% of llama.cpp's time in every phase: {verdict} (worst wall/decode {worst:.3f})")
    print(load_line())


if __name__ == "__main__":
    main()
