"""The BART scorer's cost (issue 20): BARTScore on 200 real IMHI explanation pairs at bart-large's shapes (random
weights of that size: the cost does not depend on their values), seconds per pair, against the cost of generating
those explanations on the 7B shape.

The model: BartForConditionalGeneration with bart-large's config (d_model 1,024, 12 + 12 layers, 16 heads, FFN 4,096,
vocabulary 50,265, 1,024 positions), written as safetensors from numpy and converted by the package's converter
(float32, as the benchmark scores). Its tokenizer: SmolLM2's byte-level BPE (49,152 tokens, GPT-2's scheme as BART's),
rebuilt from the GGUF file, so the token counts are those of a GPT-2-style vocabulary (BART's own is not on this
machine). Pairs: the gold reasoning of row i of an IMHI test file as the candidate, that of row i+1 as the
reference (real lengths), 25 rows of each of 8 tasks.

Generation's cost: the explanation's tokens times the 7B Q4_K_M decode cost measured in docs/performance.md
on this kind of machine (113 ms a token with 8 posts side by side, the defaults; 204 ms alone): not measured here.

    python benchmarks/explanation_scoring.py [--pairs 200] [--threads 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import IMHI, load_line, smollm2
from mental_edge.convert import convert_checkpoint

from mental_edge.engine.ctranslate2 import SequenceScorer

TASKS = ("CAMS", "DR", "Irf", "MultiWD", "SAD", "dreaddit", "loneliness", "t-sid")
DECODE_MS_7B = {"batched (8 posts, the defaults)": 113.0, "alone": 204.0}  # docs/performance.md (7B limits)
CONFIG = dict(
    d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16, decoder_attention_heads=16,
    encoder_ffn_dim=4096, decoder_ffn_dim=4096, vocab_size=50265, max_position_embeddings=1024,
    activation_function="gelu", scale_embedding=False, bos_token_id=0, pad_token_id=1, eos_token_id=2,
    decoder_start_token_id=2, architectures=["BartForConditionalGeneration"], model_type="bart",
)  # fmt: skip


def pairs(n: int) -> list[tuple[str, str]]:
    per_task = -(-n // len(TASKS))
    out = []
    for task in TASKS:
        with open(IMHI / f"{task}.csv", newline="", encoding="utf-8") as fh:
            golds = [r["gpt-3.5-turbo"] for r in list(csv.DictReader(fh))[: per_task + 1]]
        reasons = [g.split("Reasoning:", 1)[-1].strip() for g in golds]
        out += list(zip(reasons[1:], reasons[:-1]))
    return out[:n]


def smollm2_tokenizer(path: Path):
    """SmolLM2's byte-level BPE as a `tokenizers.Tokenizer`, with BART's five special tokens first."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokens = specials + [t for t in strings("tokenizer.ggml.tokens") if t not in specials]
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [m for m in merges if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def bart_large(folder: Path, tokenizer) -> Path:
    from safetensors.numpy import save_file

    c = CONFIG
    d, f, v, p = c["d_model"], c["encoder_ffn_dim"], c["vocab_size"], c["max_position_embeddings"] + 2
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    t = {"model.shared.weight": w(v, d), "final_logits_bias": np.zeros((1, v), np.float32)}
    for stack, n in (("encoder", c["encoder_layers"]), ("decoder", c["decoder_layers"])):
        t[f"model.{stack}.embed_positions.weight"] = w(p, d)
        t[f"model.{stack}.layernorm_embedding.weight"] = np.ones(d, np.float32)
        t[f"model.{stack}.layernorm_embedding.bias"] = np.zeros(d, np.float32)
        for i in range(n):
            q = f"model.{stack}.layers.{i}."
            attns = ["self_attn"] + (["encoder_attn"] if stack == "decoder" else [])
            for a in attns:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    t[q + f"{a}.{proj}.weight"], t[q + f"{a}.{proj}.bias"] = w(d, d), w(d)
                t[q + f"{a}_layer_norm.weight"], t[q + f"{a}_layer_norm.bias"] = np.ones(d, np.float32), w(d)
            t[q + "fc1.weight"], t[q + "fc1.bias"], t[q + "fc2.weight"], t[q + "fc2.bias"] = (
                w(f, d),
                w(f),
                w(d, f),
                w(d),
            )
            t[q + "final_layer_norm.weight"], t[q + "final_layer_norm.bias"] = np.ones(d, np.float32), w(d)
    folder.mkdir(parents=True)
    save_file(t, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"CPU: {model} ({platform.machine()}), {args.threads} threads; {load_line()}")
    work = Path(tempfile.mkdtemp(prefix="bart-score-bench."))
    try:
        tokenizer = smollm2_tokenizer(smollm2())
        start = time.perf_counter()
        folder = convert_checkpoint(bart_large(work / "ckpt", tokenizer), work / "scorer", outtype="f32")
        shutil.rmtree(work / "ckpt")
        print(f"bart-large shape written and converted (float32) in {time.perf_counter() - start:.0f} s")
        data = pairs(args.pairs)
        lengths = [len(tokenizer.encode(c).ids) for c, _ in data]
        ref_lengths = [len(tokenizer.encode(r).ids) for _, r in data]
        print(f"{len(data)} pairs; candidate tokens mean {np.mean(lengths):.0f} (max {max(lengths)}), "
              f"reference tokens mean {np.mean(ref_lengths):.0f}")  # fmt: skip
        generate = {name: sum(lengths) * ms / 1000 for name, ms in DECODE_MS_7B.items()}
        for name, seconds in generate.items():
            print(f"generating these explanations on the 7B shape, {name}: {seconds:.0f} s "
                  f"({seconds / len(data):.2f} s a pair; per-token cost from docs/performance.md)")  # fmt: skip
        for compute in ("float32", "int8"):
            scorer = SequenceScorer(folder, threads=args.threads, compute_type=compute)
            scorer.score(*zip(*data[:4]), batch_size=args.batch)  # warm-up
            start = time.perf_counter()
            scorer.score([c for c, _ in data], [r for _, r in data], batch_size=args.batch)
            seconds = time.perf_counter() - start
            scorer.close()
            shares = ", ".join(f"{seconds / g:.1%} of generating ({n})" for n, g in generate.items())
            print(f"BARTScore, compute {compute}: {seconds:.1f} s, {seconds / len(data):.3f} s a pair; {shares}")
        print(load_line())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
