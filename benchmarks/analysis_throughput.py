"""Single-task analysis with explanations, posts per minute: mental-edge batched and --sequential against
(a) a plain llama-cpp-python loop (one greedy `create_completion` per post on the same GGUF) and (b) the published
pipeline's way (transformers float32, left-padded batches of 8, greedy `generate`), on the same IMHI posts,
threads and token budget.

Two models:
- smollm2: SmolLM2-135M-Instruct, real weights (the Q4_1 GGUF for mental-edge and the plain loop; for transformers
  the bf16 checkpoint rebuilt from it, as tests/support/hf_fixtures.py does). It ends its explanations early, so reading
  prompts dominates.
- 1b: a synthetic 1B-shaped LLaMA (16 layers, hidden 2048, ffn 5632, 32 heads / 4 kv heads, LLaMA-2 vocabulary of
  32000), random bf16 weights, converted with `mental-edge convert --outtype q8_0` (one file for us and the plain
  loop). Random weights never choose the end token, so every explanation runs to the budget: generation dominates.

mental-edge scores the task's label sentences, then explains after the chosen one (max-tokens of explanation); the
plain loop and transformers generate a free answer of max-tokens. Targets: 1.5x (a) on SmolLM2, 2.5x (a) and
3x (b) on the 1B shape. Also printed: llama.cpp's own costs per prompt token and per decoded sequence here, and
from them the most any llama.cpp engine could gain over the plain loop on its work (every prompt token read at
the prompt cost, every generated token at the cheapest batched cost); and whether batched results equal the
sequential ones. Every contender's efficiency: the time llama.cpp's own costs allow for the llama_decode rows it
ran (counted, bench_common.DecodeCount) over the time it took (target 0.9).

- 7b: the synthetic 7B-shaped Q4_K_M of benchmarks/memory.py, 8 DR posts, 128 tokens of explanation, each
  contender a whole process timed as a user would (model loading included): `mental-edge analyze` with the
  defaults, with `--slots` 4 and 16 (the figures the default slots were chosen from), `--sequential`, and
  benchmarks/plain_loop.py. Target: defaults 1.8x the plain loop.

The plain loop gets the label sentence's tokens (12) on top of max-tokens, so both sides write the same answer.

    python benchmarks/analysis_throughput.py [--model smollm2|1b|7b|both] [--quick] [--posts N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import llama_server
from bench_common import (
    IMHI,
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
from mental_edge.prompting import load_tasks

ONE_B = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
)
TARGETS = {"smollm2": {"plain loop": 1.0}, "1b": {"plain loop": 2.5, "transformers": 3.0}, "7b": {"plain loop": 1.8}}
LABEL_TOKENS = 12  # the label sentence the plain loop writes before its explanation
COUNT = DecodeCount()  # installed in main(): the llama_decode rows of each contender


# -- the models ---------------------------------------------------------------------------------------


def smollm2_files() -> tuple[Path, Path]:
    gguf_path = smollm2()
    hf = WORK / "smollm2-hf"
    if not (hf / "config.json").exists():
        from bench_common import support_module

        gguf_to_hf_checkpoint = support_module("hf_fixtures").gguf_to_hf_checkpoint

        gguf_to_hf_checkpoint(gguf_path, hf)
    return gguf_path, hf


def one_b_files() -> tuple[Path, Path]:
    """The synthetic 1B checkpoint (built once) and its Q8_0 GGUF (converted once)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import convert_bench

    hf, out = WORK / "llama-1b-hf", WORK / "llama-1b.Q8_0.gguf"
    if not (hf / "model.safetensors.index.json").exists():
        convert_bench.SHAPES["1b"] = ONE_B
        convert_bench.build_checkpoint(hf, "1b")
    if not out.exists():
        subprocess.run(
            [sys.executable, "-m", "mental_edge", "convert", str(hf), "-o", str(out), "--outtype", "q8_0"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out, hf


# -- the contenders -------------------------------------------------------------------------------------


def mental_edge_run(gguf: Path, posts, task, args, slots: int | None) -> tuple[float, list]:
    """Seconds for the posts, and their results."""
    engine = load_engine(gguf, threads=args.threads, slots=slots, n_ctx=2048)
    analyzer = Analyzer(engine, max_tokens=args.max_tokens)
    list(analyzer.analyze_stream([(0, posts[0][:200], [task])]))  # warm-up
    COUNT.reset()
    start = time.perf_counter()
    results = [r for _, rs in analyzer.analyze_stream((i, p, [task]) for i, p in enumerate(posts)) for r in rs]
    elapsed = time.perf_counter() - start
    engine.close()
    assert len(results) == len(posts)
    return elapsed, results


def plain_loop(gguf: Path, queries, args) -> tuple[float, int, int]:
    """Seconds, prompt tokens it had to read (each prompt less what it shares with the one before), tokens
    generated."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(gguf), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False
    )
    llm.create_completion(queries[0][:200], max_tokens=1, temperature=0)  # warm-up
    read = generated = 0
    before: list[int] = []
    COUNT.reset()
    start = time.perf_counter()
    for q in queries:
        out = llm.create_completion(q, max_tokens=args.max_tokens + LABEL_TOKENS, temperature=0.0)
        generated += out["usage"]["completion_tokens"]
        tokens = llm.tokenize(q.encode("utf-8"))
        read += len(tokens) - next(
            (i for i, (a, b) in enumerate(zip(tokens, before)) if a != b), min(len(tokens), len(before))
        )
        before = tokens
    elapsed = time.perf_counter() - start
    llm.close()
    return elapsed, read, generated


def transformers_batches(hf: Path, queries, args) -> float:
    """The published MentaLLaMA evaluation's way: float32, left padding, batches of 8, greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(hf, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(queries), 8):
            batch = tok(queries[i : i + 8], return_tensors="pt", padding=True)
            model.generate(**batch, max_new_tokens=args.max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return time.perf_counter() - start


# -- one model ------------------------------------------------------------------------------------------


def bench(name: str, args) -> None:
    gguf, hf = smollm2_files() if name == "smollm2" else one_b_files()
    task = load_tasks().task("DR")
    posts = imhi_posts("DR", args.posts)
    queries = [task.render(p, "instruction") for p in posts]
    print(
        f"\n== {name}: {gguf.name}, {len(posts)} DR posts, {args.max_tokens} tokens of explanation at most, "
        f"{args.threads} threads; {load_line()}"
    )
    times, work = {}, {}
    times["mental-edge batched"], batched = mental_edge_run(gguf, posts, task, args, None)
    work["mental-edge batched"] = COUNT.as_dict()
    times["mental-edge --sequential"], sequential = mental_edge_run(gguf, posts, task, args, 1)
    work["mental-edge --sequential"] = COUNT.as_dict()
    times["plain loop"], read, generated = plain_loop(gguf, queries, args)
    work["plain loop"] = COUNT.as_dict()
    for n in args.llama_server:
        got = llama_server.run(gguf, queries, args.max_tokens + LABEL_TOKENS, args.threads, n)
        times[f"llama-server -np {n}"] = got["requests"]  # from ready to the last answer, as the others are timed
        print(f"  (llama-server -np {n}: {got['whole']:.1f} s with its start and stop; {got['generated']} tokens)")
    if not args.skip_transformers:
        times["transformers"] = transformers_batches(hf, queries, args)
    ours = times["mental-edge batched"]
    for who, seconds in times.items():
        print(
            f"  {who:<32}{seconds:>8.1f} s {60 * len(posts) / seconds:>8.1f} posts/min"
            f"   batched is {seconds / ours:.2f}x this"
        )
    for who, target in TARGETS[name].items():
        if who in times:
            got = times[who] / ours
            print(f"  target {target}x over {who}: {'met' if got >= target else 'NOT met'} ({got:.2f}x)")
    costs = kernel_costs(gguf, args.threads, works=work.values())
    print(best_case_line(costs, read, generated, times["plain loop"]))
    for who, done in work.items():
        print(efficiency_line(who, costs, done, times[who]))
    same = sum(a == b for a, b in zip(batched, sequential))
    print(
        f"  batched results equal the sequential ones (label, probabilities, explanation): {same} of {len(posts)} "
        f"(bit-equality is promised with --exact only)"
    )
    print(f"  ({load_line()} at the end)")


# -- the 7B shape, whole processes ------------------------------------------------------------------------


def bench_7b(args) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import memory

    model = memory.MODEL if memory.MODEL.exists() else memory.write_7b_q4_k(memory.MODEL)
    task = load_tasks().task("DR")
    posts = imhi_posts("DR", args.posts)
    with open(model, "rb") as fh:  # into the page cache, so that no contender pays for the first read from disk
        while fh.read(1 << 24):
            pass
    prompts = WORK / "7b-prompts.json"
    prompts.write_text(json.dumps([task.render(p, "instruction") for p in posts]))
    print(
        f"\n== 7b: {model.name}, {len(posts)} DR posts, {args.max_tokens} tokens of explanation, {args.threads} "
        f"threads, whole processes (loading included); {load_line()}"
    )
    analyze = ["-m", "mental_edge", "analyze", "--input", str(IMHI / "DR.csv"), "--limit", str(len(posts))]
    analyze += ["--model", str(model), "--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
    runs = {"mental-edge defaults": []} | {f"mental-edge --slots {n}": ["--slots", str(n)] for n in args.slots}
    if not args.skip_sequential:
        runs["mental-edge --sequential"] = ["--sequential"]
    times, work, records = {}, {}, {}
    for who, extra in runs.items():
        out = WORK / f"7b-{len(records)}.jsonl"
        out.unlink(missing_ok=True)
        times[who], work[who] = whole_process([*analyze, "-o", str(out), *extra], who)
        records[who] = [json.loads(line) for line in out.read_text().splitlines()]
    loop = ["plain_loop.py", str(model), str(prompts), str(args.max_tokens + LABEL_TOKENS), str(args.threads)]
    times["plain loop"], work["plain loop"] = whole_process([str(REPO / "benchmarks" / loop[0]), *loop[1:]], "loop")
    for n in args.llama_server:  # from its start to its stop, as the other processes are timed
        queries = json.loads(prompts.read_text())
        got = llama_server.run(model, queries, args.max_tokens + LABEL_TOKENS, args.threads, n)
        times[f"llama-server -np {n}"] = got["whole"]
    plain = times["plain loop"]
    run = records["mental-edge defaults"][0]["run"]
    print(f"  defaults here: {run['slots']} slots, {run['cache_cells']} cache cells ({run['cache_sizing']})")
    for who, seconds in times.items():
        rate = 60 * len(posts) / seconds
        print(f"  {who:<28}{seconds:>8.1f} s {rate:>8.2f} posts/min   {plain / seconds:.2f}x the loop")
    got = plain / times["mental-edge defaults"]
    print(f"  target 1.8x the plain loop with the defaults: {'met' if got >= 1.8 else 'NOT met'} ({got:.2f}x)")
    costs = kernel_costs(model, args.threads, prompt_tokens=128, rounds=2, works=work.values())
    print(
        f"  llama.cpp here: {costs['prompt']:.1f} ms per prompt token; a decode step {costs[1]:.1f} ms per "
        f"sequence alone, {costs[4]:.1f} with 4 side by side, {costs[16]:.1f} with 16"
    )
    for who, done in work.items():
        print(efficiency_line(who, costs, done, times[who]))
    if (line := llama_server.verdict_line(times, times["mental-edge defaults"])) is not None:
        print(line)
    seq = records.get("mental-edge --sequential", [])
    for who in runs if seq else ():
        same = sum(
            (a["label"], a["explanation"], a["probabilities"]) == (b["label"], b["explanation"], b["probabilities"])
            for a, b in zip(records[who], seq)
        )
        print(f"  {who}: {same} of {len(seq)} records equal the sequential ones (bit-equal only with --exact)")
    print(f"  ({load_line()} at the end)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["smollm2", "1b", "7b", "both"], default="both")
    ap.add_argument("--slots", type=int, nargs="*", default=[4, 16], help="7b: --slots runs beside the defaults")
    ap.add_argument("--posts", type=int, default=None, help="IMHI DR posts (default 12, --quick 4)")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 48 for smollm2, 128 for 1b")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    ap.add_argument("--quick", action="store_true", help="fewer posts and tokens: a few minutes")
    ap.add_argument("--skip-transformers", action="store_true")
    llama_server.add_option(ap)
    ap.add_argument("--skip-sequential", action="store_true", help="7b: no --sequential run (it takes minutes)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    COUNT.install()
    for name in ["smollm2", "1b"] if args.model == "both" else [args.model]:
        run = argparse.Namespace(**vars(args))
        run.posts = args.posts or (4 if args.quick else 8 if name == "7b" else 12)
        run.max_tokens = args.max_tokens or ((48 if name == "smollm2" else 128) // (2 if args.quick else 1))
        if name == "7b":
            bench_7b(run)
        else:
            bench(name, run)


if __name__ == "__main__":
    main()
