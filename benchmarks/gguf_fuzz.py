"""The deep run of the model-file fuzz test (tests/test_model_file_fuzz.py runs a sample): every mutation of
tests/support/gguf_fuzz.py on SmolLM2 Q4_1 (llama) and on tiny GLM-4 (chatglm) and T5 files built as the tests
build them, with more seeded byte flips; prints the counts (cases, clean refusals, ran, crashes, hangs,
tracebacks) and every failure. --all-in-worker sends every case through the worker subprocess, the check's
refusals included, as `mental-edge analyze -m FILE` would meet them.

    python benchmarks/gguf_fuzz.py [--flips N] [--seed N] [--only llama|chatglm|t5] [--all-in-worker]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_common import REPO, smollm2, support_module


def tiny_files(folder: Path) -> dict[str, Path]:
    """SmolLM2 plus tiny GLM-4 and T5 GGUF files (torch builds their checkpoints; tests/support/)."""
    from mental_edge.convert import convert_checkpoint

    glm_tiny, seq2seq = support_module("glm_tiny"), support_module("seq2seq_tiny")
    texts = list(glm_tiny.CHINESE_TEXTS) * 3 + ["I feel sad and tired every day; work is stressful."] * 3
    ranks, merges = glm_tiny.train_ranks(texts, 100)
    config = glm_tiny.glm_config(ranks)
    glm_dir = glm_tiny.write_native(folder / "glm", glm_tiny.native_state_dict(config), config, ranks, merges)
    t5_dir = seq2seq.write_t5(folder / "t5", REPO.parent / "shared" / "data" / "imhi")
    return {
        "llama": smollm2(),
        "chatglm": convert_checkpoint(glm_dir, folder / "glm.gguf", outtype="f32"),
        "t5": convert_checkpoint(t5_dir, folder / "t5.gguf", quant="Q8_0"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("llama", "chatglm", "t5"))
    parser.add_argument("--all-in-worker", action="store_true")
    args = parser.parse_args()
    fuzz = support_module("gguf_fuzz")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        files = tiny_files(Path(tmp))
        for arch, path in files.items():
            if args.only and arch != args.only:
                continue
            run = fuzz.FuzzRun(path, Path(tmp) / f"work-{arch}.gguf", all_in_worker=args.all_in_worker)
            counts: Counter = Counter()
            start = time.perf_counter()
            try:
                for case in fuzz.cases(path, seed=args.seed, flips=args.flips):
                    outcome = run.run(case)
                    ok = outcome.status == "ran" or (outcome.status == "refused" and fuzz.one_line(outcome))
                    counts[outcome.status if ok else f"BAD {outcome.status}"] += 1
                    if not ok:
                        bad += 1
                        print(f"  {arch} {case.name}: {outcome.status} ({outcome.where}): {outcome.message}")
            finally:
                run.close()
            took = time.perf_counter() - start
            print(f"{arch}: {sum(counts.values())} cases, {dict(counts)}, {run.loads} loads, {took:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
