"""Tokens decoded per post before and after issue #12 items 1-2, for all 16 English IMHI tasks on real DR posts,
labels only and with explanations, one at a time and batched: before, each candidate answer read on its own and
each explanation reading its answer sentence again; after, the answers as a token trie (engine/trie.py) and the
explanation going on from its answer's cells. With the largest difference in any label's log-probability between
the two, and how many records differ at all (label, probabilities or explanation).

    python benchmarks/candidate_trie.py [--model PATH] [--posts N] [--max-tokens N] [--threads N] [--slots N] [--exact]

Without --exact the engine's fast default settings hold (engine/llama.py): both layouts then round differently.
"""

from __future__ import annotations

import argparse
import time

from bench_common import imhi_posts, load_line, smollm2

from mental_edge.analysis import Analyzer
from mental_edge.engine import load_engine
from mental_edge.prompting import load_tasks


def run(engine, posts, tasks, share: bool, explain: bool, max_tokens: int):
    """(decoded tokens, seconds, records) of one pass over the posts, from an empty cache; `share`: the trie and
    the continued explanations, else neither."""
    engine.share_candidates = engine.continue_answers = share
    engine.clear_cache()
    analyzer = Analyzer(engine, explain=explain, max_tokens=max_tokens)
    before, start = engine.decoded_tokens, time.perf_counter()
    records = [r for _, results in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)) for r in results]
    return engine.decoded_tokens - before, time.perf_counter() - start, records


def worst_log_prob_gap(flat, trie) -> tuple[float, int]:
    """Largest |difference| of a label probability's log, and how many records differ."""
    import math

    gap, changed = 0.0, 0
    for a, b in zip(flat, trie):
        changed += (a.label, a.probabilities, a.explanation) != (b.label, b.probabilities, b.explanation)
        for label, p in a.probabilities.items():
            gap = max(gap, abs(math.log(p) - math.log(b.probabilities[label])))
    return gap, changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--posts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--exact", action="store_true", help="the bit-exact engine settings (--exact)")
    args = parser.parse_args()
    tasks = load_tasks().get("all", language="en")
    posts = imhi_posts("DR", args.posts)
    print(f"{len(tasks)} tasks x {len(posts)} DR posts, {'exact' if args.exact else 'default'} settings, {load_line()}")
    for slots in (1, args.slots):
        model = args.model or smollm2()
        engine = load_engine(model, threads=args.threads, slots=slots, n_ctx=2048, exact=args.exact or None)
        run(engine, posts[:1], tasks[:1], True, False, 1)  # warm-up
        for explain in (False, True):
            flat = run(engine, posts, tasks, False, explain, args.max_tokens)
            trie = run(engine, posts, tasks, True, explain, args.max_tokens)
            gap, changed = worst_log_prob_gap(flat[2], trie[2])
            mode = f"{'batched, ' + str(slots) + ' slots' if slots > 1 else 'one at a time'}, "
            mode += f"explanations of {args.max_tokens}" if explain else "labels only"
            print(
                f"{mode}: tokens decoded per post {flat[0] / len(posts):.0f} -> {trie[0] / len(posts):.0f}, "
                f"{flat[1]:.1f} s -> {trie[1]:.1f} s; worst label log-probability difference {gap:.2g}, "
                f"records differing {changed}/{len(trie[2])}"
            )
        engine.close()


if __name__ == "__main__":
    main()
