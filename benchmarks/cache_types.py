"""Why the engine keeps bf16 cache values on the CPU (engine/llama.py, CPU_VALUE_TYPE): accuracy and speed of the
cache's value type, measured side by side on real weights.

SmolLM2-135M-Instruct rebuilt as a bf16 checkpoint (tests/support/hf_fixtures.py) and converted to an f16 GGUF, so both
sides hold the same weights; transformers float32 is the reference. For each value type (keys f16, flash attention
on, micro-batches of 32, as the engine runs): over every position of a few IMHI DR prompts, the worst logit
difference and the mean and worst error of the next token's log-probability; then ms per generated token, one
sequence alone at about 400 cells (the path whose f16 form depends on the other cells in the cache; see
tests/test_batching.py).

    python benchmarks/cache_types.py [--prompts N] [--threads N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from analysis_throughput import smollm2_files
from bench_common import WORK, imhi_posts, load_line
from gguf import GGMLQuantizationType

from mental_edge.prompting import load_tasks

VALUE_TYPES = ("F16", "BF16", "Q8_0")


def f16_gguf(hf) -> str:
    out = WORK / "smollm2-f16.gguf"
    if not out.exists():
        subprocess.run(
            [sys.executable, "-m", "mental_edge", "convert", str(hf), "-o", str(out), "--outtype", "f16"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return str(out)


def reference_logits(hf, token_lists) -> list[np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.inference_mode():
        return [model(torch.tensor([t])).logits[0].double().numpy() for t in token_lists]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def measure(path: str, value_type: str, token_lists, reference, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(
        path,
        n_ctx=1024,
        n_batch=512,
        n_ubatch=32,
        logits_all=True,
        n_threads=threads,
        verbose=False,
        flash_attn=True,
        type_v=int(GGMLQuantizationType[value_type]),
    )
    worst, errors = 0.0, []
    for tokens, ref in zip(token_lists, reference):
        llm.reset()
        llm.eval(tokens)
        got = np.array(llm.scores[: len(tokens)], dtype=np.float64)
        worst = max(worst, float(np.abs(got - ref).max()))
        diff = np.abs(_log_softmax(got) - _log_softmax(ref))
        errors += [diff[i, tokens[i + 1]] for i in range(len(tokens) - 1)]
    longest = max(token_lists, key=len)
    per_token = float("inf")
    for _ in range(3):  # the best of three rounds of 32 tokens
        llm.reset()
        llm.eval(longest)
        start = time.perf_counter()
        for _ in range(32):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        per_token = min(per_token, 1000 * (time.perf_counter() - start) / 32)
    llm.close()
    return {"worst": worst, "mean": float(np.mean(errors)), "max": float(np.max(errors)), "ms": per_token}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    _, hf = smollm2_files()
    path = f16_gguf(hf)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf)
    task = load_tasks().task("DR")
    token_lists = [tokenizer(task.render(p, "instruction"))["input_ids"][:400] for p in imhi_posts("DR", args.prompts)]
    print(
        f"SmolLM2 f16 GGUF vs transformers f32, {len(token_lists)} DR prompts "
        f"({sum(map(len, token_lists))} positions), {args.threads} threads; {load_line()}"
    )
    reference = reference_logits(hf, token_lists)
    print(f"  {'values':<8}{'worst logit diff':>18}{'next-token logprob error mean / max':>38}{'ms per token':>15}")
    for value_type in VALUE_TYPES:
        m = measure(path, value_type, token_lists, reference, args.threads)
        print(f"  {value_type.lower():<8}{m['worst']:>18.4f}{m['mean']:>25.4f} / {m['max']:.4f}{m['ms']:>15.1f}")
    print(f"  ({load_line()} at the end)")


if __name__ == "__main__":
    main()
