"""Conversion speed and memory on a synthetic LLaMA checkpoint, side by side with llama.cpp's own converter.

Builds a checkpoint with real tensor names, config and the LLaMA-2 SentencePiece vocabulary (from
../shared/fixtures/vocab) and random bf16 weights, in 2 GB safetensors shards with an index, then times
`mental-edge convert` to f16 and to Q4_K_M, and llama.cpp's `convert_hf_to_gguf.py` to f16, each in a child
process, reporting wall time, throughput and peak memory (ru_maxrss of the child; and the peak of its
anonymous memory, polled from /proc, since file pages mapped by llama.cpp's quantizer count in RSS too).

llama.cpp's converter comes from the llama-cpp-python 0.3.36 source distribution (it needs torch; it is run,
never copied into this repository). Pass --llama-cpp DIR (the sdist's vendor/llama.cpp) or let the script
`pip download` the sdist into --cache.

    python benchmarks/convert_bench.py --shape small      # TinyLlama-1.1B shapes, a few minutes
    python benchmarks/convert_bench.py --shape 7b-slice   # 7B widths, 2 layers: the 7B's peak memory, quickly
    python benchmarks/convert_bench.py --shape 7b         # LLaMA-2-7B shapes: ~13 GB per file, ~40 GB of disk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPM_VOCAB = REPO.parent / "shared" / "fixtures" / "vocab" / "ggml-vocab-llama-spm.gguf"

SHAPES = {
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    ),
    # LLaMA-2-7B widths with 2 of its 32 layers: memory peaks per tensor (the 32000 x 4096 embedding is the
    # largest), so this shows the full 7B's peak RSS in a fraction of the time and disk
    "7b-slice": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=2,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    ),
    "small": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
    "tiny": dict(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
    ),
}
SHARD_BYTES = 2 * 2**30


def config_for(shape: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 32000,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        **SHAPES[shape],
    }


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, ff, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (h, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, h),
                p + "mlp.gate_proj.weight": (ff, h),
                p + "mlp.up_proj.weight": (ff, h),
                p + "mlp.down_proj.weight": (h, ff),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    return shapes


def random_bf16(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random bf16 bit patterns of magnitude 2^-7..2^-3 with random signs (fast: no float maths)."""
    n = int(np.prod(shape))
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    exponent = (120 + (bits >> 8) % 5).astype(np.uint16)
    return (bits & 0x807F) | (exponent << 7)


def _write_shard(path: Path, names: list[str], shapes: dict, rng) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in names:
        size = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as fp:
        fp.write(len(head).to_bytes(8, "little") + head)
        for name in names:
            random_bf16(shapes[name], rng).tofile(fp)


def build_checkpoint(folder: Path, shape: str) -> int:
    """Write the synthetic checkpoint; returns its number of parameters."""
    from bench_common import support_module
    from gguf import GGUFReader

    sentencepiece_model_bytes = support_module("hf_fixtures").sentencepiece_model_bytes

    config = config_for(shape)
    shapes = tensor_shapes(config)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    vocab = GGUFReader(SPM_VOCAB)
    fields = [vocab.fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "scores", "token_type")]
    (folder / "tokenizer.model").write_bytes(sentencepiece_model_bytes(*fields))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "tokenizer_class": "LlamaTokenizer",
            }
        )
    )
    shards, current, size = [], [], 0
    for name, s in shapes.items():
        nbytes = int(np.prod(s)) * 2
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    rng = np.random.default_rng(0)
    weight_map = {}
    for i, names in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _write_shard(folder / file, names, shapes, rng)
        weight_map.update({n: file for n in names})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sum(int(np.prod(s)) for s in shapes.values())


# Run a command as a child, poll its anonymous memory, report wall time and peaks as JSON on stdout.
_MEASURE = r"""
import json, resource, subprocess, sys, tempfile, time
t0 = time.perf_counter()
log = tempfile.TemporaryFile()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=log)
peak_anon = 0
while child.poll() is None:
    try:
        with open(f"/proc/{child.pid}/status") as fp:
            for line in fp:
                if line.startswith("RssAnon:"):
                    peak_anon = max(peak_anon, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.05)
log.seek(0)
err = log.read().decode(errors="replace")
print(json.dumps({"rc": child.returncode, "seconds": time.perf_counter() - t0, "err": err[-800:],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "anon_kib": peak_anon}))
"""


def measure(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result['err']}")
    return result


def llama_cpp_converter(args) -> Path:
    if args.llama_cpp:
        return Path(args.llama_cpp) / "convert_hf_to_gguf.py"
    unpacked = args.cache / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if not unpacked.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "llama-cpp-python==0.3.36",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(args.cache),
            ],
            check=True,
        )
        with tarfile.open(args.cache / "llama_cpp_python-0.3.36.tar.gz") as tar:
            tar.extractall(args.cache, filter="data")
    return unpacked


def compare_outputs(ours: Path, theirs: Path) -> str:
    """Tensor by tensor and key by key, our f16 file against llama.cpp's converter's (general.* aside)."""
    from gguf import GGUFReader

    a, b = GGUFReader(ours), GGUFReader(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    if ta.keys() != tb.keys():
        return f"tensor names differ: {sorted(ta.keys() ^ tb.keys())[:5]}"
    diff = [n for n in ta if ta[n].tensor_type != tb[n].tensor_type or not np.array_equal(ta[n].data, tb[n].data)]
    keys = {k for k in a.fields.keys() | b.fields.keys() if not k.startswith(("general.", "GGUF."))}
    kv_diff = sorted(
        k for k in keys if k not in a.fields or k not in b.fields or a.fields[k].contents() != b.fields[k].contents()
    )
    return (
        f"check against llama.cpp's output: {len(ta) - len(diff)}/{len(ta)} tensors identical in type and "
        f"bytes; metadata keys that differ: {kv_diff or 'none'}"
    )


def _row(label: str, r: dict, nbytes: int) -> str:
    return (
        f"{label:34} {r['seconds']:8.1f} {nbytes / r['seconds'] / 2**20:9.0f} "
        f"{r['maxrss_kib'] / 2**20:9.2f} {r['anon_kib'] / 2**20:9.2f}"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder, removed after)")
    ap.add_argument("--llama-cpp", help="llama.cpp source folder holding convert_hf_to_gguf.py")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mental-edge-bench")
    ap.add_argument("--skip-llama-cpp", action="store_true", help="measure mental-edge only")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="convert-bench-"))
    try:
        ckpt = work / "ckpt"
        t0 = time.perf_counter()
        n_params = build_checkpoint(ckpt, args.shape)
        src_bytes = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
        print(
            f"shape {args.shape}: {n_params / 1e9:.2f}B parameters, {src_bytes / 2**30:.2f} GiB of bf16 "
            f"safetensors (built in {time.perf_counter() - t0:.0f} s); {os.cpu_count()} CPUs"
        )
        me = [sys.executable, "-m", "mental_edge"]
        results = {}
        ours = work / "me-f16.gguf"
        results["mental-edge convert --outtype f16"] = measure([*me, "convert", str(ckpt), "-o", str(ours)])
        out = work / "me-q4km.gguf"
        results["mental-edge convert --quant Q4_K_M"] = measure(
            [*me, "convert", str(ckpt), "-o", str(out), "--quant", "Q4_K_M"]
        )
        out.unlink()
        if not args.skip_llama_cpp:
            script = llama_cpp_converter(args)
            out = work / "lc-f16.gguf"
            results["llama.cpp convert_hf_to_gguf f16"] = measure(
                [sys.executable, str(script), str(ckpt), "--outfile", str(out), "--outtype", "f16"]
            )
            print(compare_outputs(ours, out))
        print(f"{'command':34} {'seconds':>8} {'MiB/s in':>9} {'maxRSS GiB':>9} {'anon GiB':>9}")
        for label, r in results.items():
            print(_row(label, r, src_bytes))
        if "llama.cpp convert_hf_to_gguf f16" in results:
            ours, theirs = results["mental-edge convert --outtype f16"], results["llama.cpp convert_hf_to_gguf f16"]
            print(
                f"f16: mental-edge throughput / llama.cpp = {theirs['seconds'] / ours['seconds']:.2f}x, "
                f"peak RSS ratio = {ours['maxrss_kib'] / theirs['maxrss_kib']:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
