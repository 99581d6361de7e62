"""Where an analysis run's time goes: every llama_decode of `mental-edge analyze`'s engine timed in the process,
grouped by what the batch held (prompt rows only, decode steps only, or both), with ms per row.

It shows whether a run's time is spent inside llama.cpp or around it, and what llama.cpp's rows cost at the
context lengths and cache sizes of a real run, which the short isolated measurements of bench_common.kernel_costs
(the efficiency figures' floor) do not see. Also: how wide the steps were (tokens generated side by side in one
llama_decode: the histogram), how many slots were busy, and the batcher's rows by kind. SmolLM2 (real weights)
or the synthetic 7B shape of benchmarks/memory.py; one task (DR) or screening (`--tasks all`).

    python benchmarks/decode_profile.py [--model smollm2|7b] [--tasks DR|all] [--posts N] [--max-tokens N]
                                        [--slots N] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

from bench_common import imhi_posts, load_line, smollm2, step_rows
from llama_cpp import _internals

from mental_edge.analysis import Analyzer
from mental_edge.engine import load_engine
from mental_edge.engine.llamacpp.batcher import Batcher
from mental_edge.prompting import load_tasks

LOG: list[tuple[int, int, float]] = []  # (rows, rows that are their sequence's only row, seconds) per decode


def install_timer() -> None:
    inner = _internals.LlamaContext.decode

    def decode(ctx, batch):
        b = batch.batch
        single = step_rows(b)
        start = time.perf_counter()
        out = inner(ctx, batch)
        LOG.append((b.n_tokens, single, time.perf_counter() - start))
        return out

    _internals.LlamaContext.decode = decode


def model_path(name: str):
    if name == "smollm2":
        return smollm2()
    import memory

    return memory.MODEL if memory.MODEL.exists() else memory.write_7b_q4_k(memory.MODEL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["smollm2", "7b"], default="smollm2")
    ap.add_argument("--posts", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--slots", type=int, default=None, help="default: the engine's sizing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", default="DR", help="a task or family, or all (screening)")
    args = ap.parse_args()
    install_timer()
    engine = load_engine(model_path(args.model), threads=args.threads, slots=args.slots, n_ctx=2048)
    tasks = load_tasks().get(args.tasks, language="en")
    posts = imhi_posts("DR", args.posts)
    print(
        f"== {args.model}, {len(posts)} DR posts x {len(tasks)} tasks, {args.max_tokens} tokens, "
        f"{engine.settings['slots']} slots, {engine.settings['cache_cells']} cells; {load_line()}"
    )
    analyzer = Analyzer(engine, max_tokens=args.max_tokens)
    LOG.clear()
    busy = count_busy()
    start = time.perf_counter()
    for _ in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)):
        pass
    wall = time.perf_counter() - start
    inside = sum(s for _, _, s in LOG)
    print(
        f"  {wall:.1f} s, {inside:.1f} s of it inside llama_decode ({len(LOG)} calls): "
        f"{100 * (wall - inside) / wall:.1f}% outside"
    )
    groups: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for rows, single, seconds in LOG:
        kind = "steps" if rows == single else "prompt and steps" if single else "prompt"
        size = rows if kind == "steps" else 512 if rows > 256 else 256 if rows > 64 else 64
        g = groups[(kind, size)]
        g[0], g[1], g[2] = g[0] + 1, g[1] + rows, g[2] + seconds
    for (kind, size), (calls, rows, seconds) in sorted(groups.items()):
        what = f"{size} wide" if kind == "steps" else f"batches of up to {size} rows"
        print(
            f"  {kind:<17} {what:<26} {calls:>4} calls {rows:>6} rows {seconds:>7.1f} s "
            f"{1000 * seconds / rows:>7.1f} ms/row"
        )
    widths = Counter(single for _, single, _ in LOG if single)
    print(f"  step widths (tokens generated side by side: calls): {dict(sorted(widths.items()))}")
    print(f"  slots busy (slots: calls): {dict(sorted(busy.items()))}")
    if engine.batcher is not None:
        print(f"  rows by kind: {dict(engine.batcher.rows)}")
    engine.close()


def count_busy() -> Counter:
    """Slots busy at each batch the Batcher decodes."""
    busy: Counter = Counter()
    inner = Batcher._decode

    def decode(self, parts):
        busy[self.busy] += 1
        return inner(self, parts)

    Batcher._decode = decode
    return busy


if __name__ == "__main__":
    main()
