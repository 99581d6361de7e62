"""What each exactness rule costs on this CPU, and which of them batched == sequential (to the bit) needs.

The engine's --exact settings on a CPU (engine/llama.py): micro-batches of 32 tokens, bf16 cache values, flash
attention on, and a partner row for a micro-batch's lone output row; the batcher also keeps every sequence's
cells in position order (engine/llama_batch.py; always on, so not varied here: its cost shows as the cache
restarts printed). Each setting below drops one rule from --exact (and the last drops them all, the engine's
fast default); for each: the time of a batched analysis (several IMHI tasks per post, explanations), its cost
against the fast settings, and whether its records equal the sequential ones to the bit (label, probabilities,
explanation). The best of `--rounds` rounds, settings interleaved.

    python benchmarks/exactness.py [--model PATH] [--posts N] [--max-tokens N] [--threads N] [--rounds N]
"""

from __future__ import annotations

import argparse
import time

from bench_common import imhi_posts, load_line, smollm2
from gguf import GGMLQuantizationType

from mental_edge.analysis import Analyzer
from mental_edge.engine.llamacpp.decoder import CPU_UBATCH, LlamaEngine
from mental_edge.prompting import load_tasks

TASKS = ("DR", "SAD", "CAMS")
SETTINGS = {  # name -> what changes from --exact
    "--exact (all rules)": {},
    "micro-batches of 512": {"n_ubatch": 512},
    "f16 cache values": {"value_type": GGMLQuantizationType.F16},
    "flash attention auto": {"flash_attn": "auto"},
    "no paired output rows": {"pair_outputs": False},
    "fast (no rule)": {
        "n_ubatch": 512,
        "value_type": GGMLQuantizationType.F16,
        "flash_attn": "auto",
        "pair_outputs": False,
    },
}


def engine_with(model, args, slots: int, change: dict) -> LlamaEngine:
    """An --exact engine with `change` applied to its settings, its context made again with them."""
    engine = LlamaEngine(model, threads=args.threads, slots=slots, n_ctx=args.ctx, exact=True)
    assert engine.n_ubatch == CPU_UBATCH
    if change:
        for key, value in change.items():
            setattr(engine, key, value)
        engine._ctx.close()
        engine._ctx = engine._new_context(args.threads)
    return engine


def analyse(model, args, posts, slots: int, change: dict) -> tuple[float, list, int]:
    engine = engine_with(model, args, slots, change)
    try:
        tasks = [load_tasks().task(n) for n in TASKS]
        analyzer = Analyzer(engine, max_tokens=args.max_tokens)
        list(analyzer.analyze_stream([(0, posts[0][:200], tasks[:1])]))  # warm-up
        start = time.perf_counter()
        records = [r for _, rs in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)) for r in rs]
        seconds = time.perf_counter() - start
        restarts = engine.batcher.restarts if engine.batcher is not None else 0
        return seconds, records, restarts
    finally:
        engine.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--posts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="setting names to run (default: all)")
    args = ap.parse_args()
    model = args.model or smollm2()
    posts = imhi_posts("DR", args.posts)
    settings = {k: v for k, v in SETTINGS.items() if not args.only or k in args.only}
    print(
        f"{model}: {len(posts)} DR posts x {len(TASKS)} tasks ({', '.join(TASKS)}), {args.max_tokens} tokens of "
        f"explanation, {args.slots} slots, {args.threads} threads, best of {args.rounds}; {load_line()}"
    )
    best: dict[str, float] = {}
    results = {}
    for _ in range(args.rounds):
        for name, change in settings.items():
            seconds, records, restarts = analyse(model, args, posts, args.slots, change)
            best[name] = min(best.get(name, seconds), seconds)
            results[name] = (records, restarts)
    fast = best.get("fast (no rule)")
    exact = best.get("--exact (all rules)")
    print(f"  {'setting':<26}{'batched s':>10}{'vs fast':>9}{'rule costs':>12}  batched == sequential (bit)")
    for name, change in settings.items():
        records, restarts = results[name]
        _, sequential, _ = analyse(model, args, posts, 1, change)
        same = sum(a == b for a, b in zip(records, sequential))
        labels = sum(a.label == b.label for a, b in zip(records, sequential))
        vs_fast = f"{best[name] / fast - 1:+.1%}" if fast else "n/a"
        rule = f"{exact / best[name] - 1:+.1%}" if exact and change and len(change) == 1 else ""
        print(
            f"  {name:<26}{best[name]:>10.2f}{vs_fast:>9}{rule:>12}  {same} of {len(records)} records "
            f"({labels} labels) equal; {restarts} cache restarts"
        )
    if fast and exact:
        print(f"  the guarantee (--exact) costs {exact / fast - 1:+.1%} of batched time here (target <= 5%)")
    print(f"  ({load_line()} at the end)")


if __name__ == "__main__":
    main()
