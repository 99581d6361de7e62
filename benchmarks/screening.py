"""Screening: every IMHI task on the same posts (`--task all`, 16 questions) through mental-edge, against one
prompt per post and task through a plain llama-cpp-python loop (one greedy `create_completion` each, the published
way: the answer and its reasoning in one generation of max-tokens).

mental-edge reads each post once for all its tasks (the templates put the post first, so the tasks share its
cache) and scores label sentences instead of generating them. Printed side by side, in one run:
- labels only (`--no-explain`) and with explanations of max-tokens, all tasks and one task (DR);
- the plain loop, all tasks and one task.
Targets: all tasks at least 4x faster than the plain loop's all tasks; all tasks at most 2.5x one task. Also
printed: the most any llama.cpp engine could gain over the plain loop's work on this machine (as in
analysis_throughput.py), and each run's efficiency: the time llama.cpp's own costs allow for the llama_decode rows
it ran over the time it took (target 0.9).

    python benchmarks/screening.py [--model PATH] [--posts N] [--max-tokens N] [--threads N] [--slots N]
"""

from __future__ import annotations

import argparse
import time

import llama_server
from bench_common import DecodeCount, best_case_line, efficiency_line, imhi_posts, kernel_costs, load_line, smollm2

from mental_edge.analysis import Analyzer
from mental_edge.engine import load_engine
from mental_edge.prompting import load_tasks

LABEL_TOKENS = 12  # the plain loop writes the label sentence before the explanation: max-tokens + these


def mental_edge_run(engine, posts, tasks, explain: bool, max_tokens: int) -> float:
    analyzer = Analyzer(engine, explain=explain, max_tokens=max_tokens)
    start = time.perf_counter()
    for _ in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)):
        pass
    return time.perf_counter() - start


def plain_loop(llm, posts, tasks, max_tokens: int) -> tuple[float, int, int]:
    """Seconds, prompt tokens read (each prompt less the prefix it shares with the one before, which
    llama-cpp-python keeps in its cache), tokens generated."""
    read = generated = 0
    before: list[int] = []
    start = time.perf_counter()
    for post in posts:
        for task in tasks:
            query = task.render(post, "instruction")
            out = llm.create_completion(query, max_tokens=max_tokens + LABEL_TOKENS, temperature=0.0)
            generated += out["usage"]["completion_tokens"]
            tokens = llm.tokenize(query.encode("utf-8"))
            shared = next((i for i, (a, b) in enumerate(zip(tokens, before)) if a != b), min(len(tokens), len(before)))
            read, before = read + len(tokens) - shared, tokens
    return time.perf_counter() - start, read, generated


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--posts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=None, help="mental-edge slots (default: the engine's)")
    llama_server.add_option(ap)
    args = ap.parse_args()
    model = args.model or smollm2()
    every = load_tasks().get("all", language="en")
    one = [t for t in every if t.name == "DR"]
    posts = imhi_posts("DR", args.posts)
    print(
        f"{model}: {len(posts)} DR posts x {len(every)} tasks, {args.max_tokens} new tokens at most, "
        f"{args.threads} threads; {load_line()}"
    )

    count = DecodeCount().install()
    engine = load_engine(model, threads=args.threads, slots=args.slots, n_ctx=2048)
    mental_edge_run(engine, posts[:1], one, False, 4)  # warm-up
    t, work = {}, {}
    for explain in (False, True):
        mode = "with explanations" if explain else "labels only"
        count.reset()
        t[f"mental-edge, all tasks, {mode}"] = mental_edge_run(engine, posts, every, explain, args.max_tokens)
        work[f"mental-edge, all tasks, {mode}"] = count.as_dict()
        t[f"mental-edge, DR only, {mode}"] = mental_edge_run(engine, posts, one, explain, args.max_tokens)
    slots = engine.settings["slots"]
    engine.close()

    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False
    )
    llm.create_completion("warm-up", max_tokens=1, temperature=0.0)
    count.reset()
    t["plain loop, all tasks"], read, generated = plain_loop(llm, posts, every, args.max_tokens)
    work["plain loop, all tasks"] = count.as_dict()
    t["plain loop, DR only"] = plain_loop(llm, posts, one, args.max_tokens)[0]
    llm.close()
    for n in args.llama_server:
        queries = [task.render(post, "instruction") for post in posts for task in every]
        got = llama_server.run(model, queries, args.max_tokens + LABEL_TOKENS, args.threads, n)
        t[f"llama-server -np {n}, all tasks"] = got["requests"]  # from ready to the last answer
        print(f"(llama-server -np {n}: {got['whole']:.1f} s with its start and stop; {got['generated']} tokens)")

    print(f"mental-edge with {slots} slots")
    for who, seconds in t.items():
        n = len(posts) * (len(every) if "all tasks" in who else 1)
        print(f"  {who:<42}{seconds:>8.1f} s  {n / seconds:>6.2f} answers/s")
    plain = t["plain loop, all tasks"]
    for mode in ("labels only", "with explanations"):
        ours, single = t[f"mental-edge, all tasks, {mode}"], t[f"mental-edge, DR only, {mode}"]
        speedup, cost = plain / ours, ours / single
        print(
            f"  {mode}: {speedup:.2f}x the plain loop over all tasks "
            f"(target 4x: {'met' if speedup >= 4 else 'NOT met'}); "
            f"all tasks cost {cost:.2f}x one (target <= 2.5: {'met' if cost <= 2.5 else 'NOT met'})"
        )
    print(f"  plain loop: all tasks cost {plain / t['plain loop, DR only']:.2f}x one")
    got = plain / t["mental-edge, all tasks, with explanations"]
    verdict = "met" if got >= 1 else "NOT met"
    print(f"  target 1.0x the loop over the same prompts, with explanations: {verdict} ({got:.2f}x)")
    for who in [w for w in t if w.startswith("llama-server")]:
        ratio = t[who] / t["mental-edge, all tasks, with explanations"]
        print(f"  mental-edge with explanations is {ratio:.2f}x {who}")
    costs = kernel_costs(model, args.threads, works=work.values())
    print(best_case_line(costs, read, generated, plain))
    for who, done in work.items():
        print(efficiency_line(who, costs, done, t[who]))
    print(load_line())


if __name__ == "__main__":
    main()
