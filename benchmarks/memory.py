"""Peak resident memory of `mental-edge analyze` with a 7B-shaped Q4_K_M model at a 2,048-token context.

The model is synthetic (never in the repo): LLaMA-2-7B shapes and metadata with the LLaMA-2 vocabulary from
../shared/fixtures/vocab/ggml-vocab-llama-spm.gguf, every matrix Q4_K (valid small f16 scales, random nibbles),
norms F32; about 3.8 GB, written once to $TMPDIR/mental-edge-bench/llama-7b-shape.Q4_K_M.gguf. Each setting runs
`mental-edge analyze` on a few IMHI posts in a child process; its peak RSS is read from /proc (VmHWM) and
getrusage(RUSAGE_CHILDREN). Target: under 6 GiB, so that an 8 GiB laptop can run MentaLLaMA-chat-7B.

    python benchmarks/memory.py [--posts N] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import IMHI, load_line

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO.parent / "shared" / "fixtures" / "vocab" / "ggml-vocab-llama-spm.gguf"
MODEL = Path(tempfile.gettempdir()) / "mental-edge-bench" / "llama-7b-shape.Q4_K_M.gguf"
GIB = 2**30


def write_7b_q4_k(path: Path) -> Path:
    """A LLaMA-2-7B-shaped GGUF of Q4_K blocks, written directly with the gguf package."""
    import gguf

    vocab = gguf.GGUFReader(VOCAB)
    meta = {k: f for k, f in vocab.fields.items() if not k.startswith("GGUF.") and k != "general.file_type"}
    n_layer = int(meta["llama.block_count"].contents())
    width = int(meta["llama.embedding_length"].contents())
    ffn = int(meta["llama.feed_forward_length"].contents())
    n_vocab = len(meta["tokenizer.ggml.tokens"].contents())
    shapes = {"token_embd.weight": (n_vocab, width)}
    for i in range(n_layer):
        b = f"blk.{i}."
        shapes.update(
            {
                b + "attn_norm.weight": (width,),
                b + "ffn_norm.weight": (width,),
                b + "attn_q.weight": (width, width),
                b + "attn_k.weight": (width, width),
                b + "attn_v.weight": (width, width),
                b + "attn_output.weight": (width, width),
                b + "ffn_gate.weight": (ffn, width),
                b + "ffn_up.weight": (ffn, width),
                b + "ffn_down.weight": (width, ffn),
            }
        )
    shapes.update({"output_norm.weight": (width,), "output.weight": (n_vocab, width)})

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    for key, field in meta.items():
        if key in ("general.architecture", "general.name"):
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, kind)
    writer.add_name("llama-7b-shape (synthetic)")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
    for name, shape in shapes.items():
        if len(shape) == 1:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
        else:
            nbytes = shape[0] * shape[1] // block_size * type_size
            writer.add_tensor_info(
                name,
                (shape[0], shape[1] // block_size * type_size),
                np.dtype(np.uint8),
                nbytes,
                raw_dtype=gguf.GGMLQuantizationType.Q4_K,
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    pattern = _q4_k_blocks(4096, type_size)
    for _name, shape in shapes.items():
        if len(shape) == 1:
            writer.write_tensor_data(np.ones(shape, dtype=np.float32))
            continue
        rows, cols = shape[0], shape[1] // block_size * type_size
        reps = -(-rows * cols // pattern.size)
        writer.write_tensor_data(np.tile(pattern, reps)[: rows * cols].reshape(rows, cols))
    writer.close()
    os.replace(tmp, path)
    return path


def _q4_k_blocks(n: int, type_size: int) -> np.ndarray:
    """n Q4_K blocks: d and dmin small positive f16, random 6-bit scales and 4-bit quants."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    d = rng.uniform(1e-4, 1e-3, size=(n, 2)).astype(np.float16)
    blocks[:, :4] = d.view(np.uint8).reshape(n, 4)
    return blocks.reshape(-1)


def peak_rss(cmd: list[str], env: dict) -> dict:
    """Run cmd, polling its VmHWM; returns seconds, exit code and peak RSS (GiB) both ways."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwm = 0
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.1)
    err = child.stderr.read().decode(errors="replace")
    return {
        "rc": child.returncode,
        "seconds": time.perf_counter() - start,
        "hwm_gib": hwm * 1024 / GIB,
        "rusage_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / GIB,
        "err": err[-300:],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one post, the default setting only")
    args = ap.parse_args()
    model = MODEL if MODEL.exists() else write_7b_q4_k(MODEL)
    print(f"{model} ({model.stat().st_size / GIB:.2f} GiB); {load_line()}")
    settings = [("defaults", 2048, [])]
    if not args.quick:
        settings += [
            ("--sequential", 2048, ["--sequential"]),
            ("--slots 16", 2048, ["--slots", "16"]),
            ("--ctx 4096", 4096, []),
        ]
    posts = 1 if args.quick else args.posts
    home = Path(tempfile.mkdtemp(prefix="me-mem-"))
    env = {**os.environ, "MENTAL_EDGE_HOME": str(home)}
    for i, (label, ctx, extra) in enumerate(settings):
        out = home / f"out-{i}.jsonl"
        cmd = [
            sys.executable,
            "-m",
            "mental_edge",
            "analyze",
            "--input",
            str(IMHI / "DR.csv"),
            "--limit",
            str(posts),
            "--model",
            str(model),
            "--ctx",
            str(ctx),
            "--threads",
            str(args.threads),
            "--max-tokens",
            "8",
            "-o",
            str(out),
            *extra,
        ]
        r = peak_rss(cmd, env)
        run = json.loads(out.read_text().splitlines()[0])["run"] if out.exists() and out.stat().st_size else {}
        verdict = "met" if r["hwm_gib"] < 6 else "NOT met"
        print(
            f"  {label:<20} peak RSS {r['hwm_gib']:.2f} GiB (largest child so far by getrusage {r['rusage_gib']:.2f}), "
            f"cache cells {run.get('cache_cells')}, n_ctx {run.get('n_ctx')}, {r['seconds']:.0f} s, "
            f"exit {r['rc']}; target < 6 GiB: {verdict}"
        )
        if r["rc"]:
            print("   ", r["err"])
    print(load_line())


if __name__ == "__main__":
    main()
