"""The model-file check's cost on the 7B shape (docs/model-files.md; target: under 2% of loading the file).

The file is benchmarks/memory.py's synthetic LLaMA-2-7B-shaped Q4_K_M (real tensor infos, the LLaMA-2 vocabulary,
about 3.8 GB, written once to $TMPDIR/mental-edge-bench/). Side by side in one process: the check alone
(engine/file_check.py, the median of --repeats runs, page cache warm), then `load_engine` as the CLI opens it
(check included; the median of --loads loads, each closed before the next), and their ratio. SmolLM2 Q4_1's check
is timed too.

    python benchmarks/file_check_time.py [--repeats N] [--loads N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import memory
from bench_common import smollm2

from mental_edge.engine import load_engine
from mental_edge.engine.file_check import check_model_file


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    model = memory.MODEL if memory.MODEL.exists() else memory.write_7b_q4_k(memory.MODEL)
    small = smollm2()
    check_7b = timed(lambda: check_model_file(model), args.repeats)
    check_small = timed(lambda: check_model_file(small), args.repeats)

    def load():
        load_engine(model, n_ctx=2048, threads=args.threads, slots=1).close()

    load()  # the page cache warm for every timed load, as for the checks
    load_7b = timed(load, args.loads)
    print(
        f"check, 7B shape ({model.stat().st_size / 2**30:.2f} GiB): {check_7b * 1000:.1f} ms (median of {args.repeats})"
    )
    print(f"check, SmolLM2 Q4_1: {check_small * 1000:.1f} ms")
    print(f"load_engine, 7B shape, check included: {load_7b:.2f} s (median of {args.loads})")
    print(f"check / load: {check_7b / load_7b:.2%} (target under 2%)")


if __name__ == "__main__":
    main()
