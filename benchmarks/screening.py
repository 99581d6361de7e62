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

Where mental-edge's prompt rows go is printed beside the least these prompts need (each post once, each question
once, every label sentence scored, the chosen one followed by "Reasoning:"): what is over the least was read twice.

`--whole` also times each contender as a whole process, as a user would (model loading included):
`mental-edge analyze --task all` on a CSV of the posts, benchmarks/plain_loop.py on the same prompts, and
llama-server from its start to its stop. `--first N` takes the posts from row N of DR.csv (the two sets quoted in
docs/performance.md: rows 0-3 and 12-15; on the second the loop's greedy answers stop early).

    python benchmarks/screening.py [--model PATH] [--posts N] [--first N] [--max-tokens N] [--threads N]
                                   [--slots N] [--whole] [--llama-server N...]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter

import llama_server
from bench_common import (
    REPO,
    WORK,
    DecodeCount,
    best_case_line,
    efficiency_line,
    imhi_posts,
    kernel_costs,
    load_line,
    smollm2,
    whole_process,
)

from mental_edge.analysis import Analyzer
from mental_edge.engine import load_engine
from mental_edge.engine.trie import trie_size
from mental_edge.prompting import load_tasks

LABEL_TOKENS = 12  # the plain loop writes the label sentence before the explanation: max-tokens + these


def mental_edge_run(engine, posts, tasks, explain: bool, max_tokens: int) -> float:
    analyzer = Analyzer(engine, explain=explain, max_tokens=max_tokens)
    start = time.perf_counter()
    for _ in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)):
        pass
    return time.perf_counter() - start


def least_rows(engine, posts, tasks) -> Counter:
    """The rows these requests need at least, by what they are (the Batcher's kinds): of each prompt, the tokens
    no earlier prompt began with (a post's tasks share the post; the last token is read again for its logits);
    each request's candidate trie (engine/trie.py). Two tasks asking the same of a post are one request."""
    analyzer = Analyzer(engine)
    prompts: list[list[int]] = []
    least: Counter = Counter()
    for post in posts:
        asked = set()
        for task in tasks:
            form = analyzer.form(task)
            prompt, answers = analyzer.candidates(task.render(post, form), task, form)
            if (same := (tuple(prompt), tuple(map(tuple, answers)))) in asked:
                continue
            asked.add(same)
            shared = max((_common(prompt, before) for before in prompts), default=0)
            least["prompt"] += len(prompt) - min(shared, len(prompt) - 1)
            least["candidates"] += trie_size(answers)
            prompts.append(prompt)
    return least


def _common(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


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
            read, before = read + len(tokens) - _common(tokens, before), tokens
    return time.perf_counter() - start, read, generated


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--posts", type=int, default=4)
    ap.add_argument("--first", type=int, default=0, help="the first post's row in DR.csv (0: rows 0 to posts-1)")
    ap.add_argument("--whole", action="store_true", help="also time each contender as a whole process")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=None, help="mental-edge slots (default: the engine's)")
    llama_server.add_option(ap)
    args = ap.parse_args()
    model = args.model or smollm2()
    every = load_tasks().get("all", language="en")
    one = [t for t in every if t.name == "DR"]
    posts = imhi_posts("DR", args.first + args.posts)[args.first :]
    print(
        f"{model}: DR posts {args.first}-{args.first + len(posts) - 1} x {len(every)} tasks, {args.max_tokens} new "
        f"tokens at most, {args.threads} threads; {load_line()}"
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
        rows = Counter(engine.batcher.rows)  # a Batcher per run
        t[f"mental-edge, DR only, {mode}"] = mental_edge_run(engine, posts, one, explain, args.max_tokens)
    slots = engine.settings["slots"]
    least = least_rows(engine, posts, every)
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
    servers = {}
    for n in args.llama_server:
        queries = [task.render(post, "instruction") for post in posts for task in every]
        servers[n] = got = llama_server.run(model, queries, args.max_tokens + LABEL_TOKENS, args.threads, n)
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
    print(rows_line(rows, least, read))
    if args.whole:
        whole = whole_processes(model, posts, every, args)
        whole |= {f"llama-server -np {n}": (got["whole"], None) for n, got in servers.items()}
        t |= {f"{who} (whole process)": seconds for who, (seconds, _) in whole.items()}
        work |= {f"{who} (whole process)": done for who, (_, done) in whole.items() if done}
        print("whole processes, model loading included:")
        loop = whole["plain loop"][0]
        for who, (seconds, _) in whole.items():
            print(f"  {who:<42}{seconds:>8.1f} s  {loop / seconds:.2f}x the plain loop")
        got = loop / whole["mental-edge analyze --task all"][0]
        print(f"  target 1.3x the plain loop, whole processes: {'met' if got >= 1.3 else 'NOT met'} ({got:.2f}x)")
        seconds = {who: s for who, (s, _) in whole.items()}
        if (line := llama_server.verdict_line(seconds, seconds["mental-edge analyze --task all"])) is not None:
            print(line)
    costs = kernel_costs(model, args.threads, works=work.values())
    print(best_case_line(costs, read, generated, plain))
    for who, done in work.items():
        print(efficiency_line(who, costs, done, t[who]))
    print(load_line())


def rows_line(rows: Counter, least: Counter, loop_read: int) -> str:
    """Where mental-edge's prompt rows went (with explanations), against the least (see least_rows)."""
    read = rows["prompt"] + rows["candidates"] + rows["follow-up"]
    return (
        f"  mental-edge read {read} prompt rows (the plain loop {loop_read}): prompts {rows['prompt']} (least "
        f"{least['prompt']}), answers scored {rows['candidates']} (least {least['candidates']}), label sentence "
        f"and 'Reasoning:' {rows['follow-up']}; {rows['tokens']} tokens generated"
    )


def whole_processes(model, posts, tasks, args) -> dict:
    """Seconds and decode counts of mental-edge and the plain loop, each as a whole process (llama-server's whole
    process is timed in the same run as its requests)."""
    data = WORK / "screening-posts.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows([f"p{i}", post] for i, post in enumerate(posts))
    queries = [task.render(post, "instruction") for post in posts for task in tasks]
    prompts = WORK / "screening-prompts.json"
    prompts.write_text(json.dumps(queries))
    out = WORK / "screening-records.jsonl"
    out.unlink(missing_ok=True)
    analyze = ["-m", "mental_edge", "analyze", "--input", str(data), "--task", "all", "--model", str(model)]
    analyze += ["--max-tokens", str(args.max_tokens), "--threads", str(args.threads), "-o", str(out)]
    analyze += ["--slots", str(args.slots)] if args.slots else []
    loop = [str(REPO / "benchmarks" / "plain_loop.py"), str(model), str(prompts)]
    loop += [str(args.max_tokens + LABEL_TOKENS), str(args.threads)]
    return {
        "mental-edge analyze --task all": whole_process(analyze, "screening mental-edge"),
        "plain loop": whole_process(loop, "screening loop"),
    }


if __name__ == "__main__":
    main()
