"""Report scale: `mental-edge report` on 50,000 records (targets: under a minute, a page under 5 MB).

Records are written by the real writer (io.records.RecordWriter) as analyze writes them: 50,000 records over
five IMHI tasks with gold labels, label probabilities, explanations and a few flagged rows. The CLI is run as a
subprocess (process start and imports included), once on one run and once comparing two runs of the same rows;
both print the wall time and the page's size.

    flock /tmp/me-cpu.lock python benchmarks/report_scale.py [--records N] [--resamples N]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mental_edge.analysis.runner import FIELDS
from mental_edge.io.records import RecordWriter
from mental_edge.prompting import load_tasks

TASKS = ("DR", "dreaddit", "SAD", "CAMS", "loneliness")
LIMIT_SECONDS, LIMIT_MB = 60.0, 5.0


def write_run(path: Path, records: int, seed: int, agreement: float) -> None:
    """`records` records; a row's label matches gold with probability `agreement`; seed 0's gold for every run."""
    taskset, gold_rng, rng = load_tasks(), random.Random(0), random.Random(seed)
    run = {"model": f"bench-{seed}", "model_sha256": "0" * 64, "quantization": "Q4_K_M", "n_ctx": 2048}
    with RecordWriter(path, fields=FIELDS) as writer:
        for n in range(records):
            task = taskset.task(TASKS[n % len(TASKS)])
            labels = list(task.labels)
            gold = gold_rng.choice(labels)
            label = gold if rng.random() < agreement else rng.choice(labels)
            weights = {k: rng.random() + (3.0 if k == label else 0.0) for k in labels}
            total = sum(weights.values())
            unparsed = n % 997 == 0
            writer.write(
                {
                    "id": str(n // len(TASKS)),
                    "task": task.name,
                    "label": None if unparsed else label,
                    "probabilities": None if unparsed else {k: v / total for k, v in weights.items()},
                    "explanation": f"The post mentions sleep and work ({n}); the label follows from that.",
                    "answer": None,
                    "gold": gold,
                    "flags": ["unparsed"] if unparsed else (["truncated"] if n % 1009 == 0 else []),
                    "template_sha256": "a" * 64,
                    "run": run,
                }
            )


def timed_report(args: list[str], page: Path) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mental_edge", "report", *args, "-o", str(page)], check=True)
    return time.perf_counter() - start, page.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--resamples", type=int, default=1000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        a, b = Path(folder) / "q8.jsonl", Path(folder) / "q4.csv"
        write_run(a, options.records, seed=1, agreement=0.7)
        write_run(b, options.records, seed=2, agreement=0.65)
        extra = ["--resamples", str(options.resamples)]
        for name, runs in (("one run", [a]), ("two runs compared", [a, b])):
            seconds, mb = timed_report([*map(str, runs), *extra], Path(folder) / "page.html")
            verdict = "met" if seconds < LIMIT_SECONDS and mb < LIMIT_MB else "NOT met"
            print(
                f"{name}: {options.records} records each, {options.resamples} resamples: {seconds:.1f} s, "
                f"{mb:.2f} MB (targets < {LIMIT_SECONDS:.0f} s, < {LIMIT_MB:.0f} MB: {verdict})"
            )


if __name__ == "__main__":
    main()
