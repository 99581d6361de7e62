"""A tiny random LLaMA checkpoint written with torch, in the layouts real checkpoints ship (tests only)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from support.llama_shapes import llama_shapes

CONFIG = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_hidden_layers=2,
    vocab_size=128,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


def state_dict(dtype=torch.bfloat16, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = llama_shapes(CONFIG, lm_head=True, rotary=True)
    return {name: torch.randn(shape, generator=g).to(dtype) for name, shape in shapes.items()}


def _shards(sd: dict, n: int) -> list[dict]:
    names = list(sd)
    return [{k: sd[k] for k in names[i::n]} for i in range(n)]


def write_safetensors(folder: Path, sd: dict, shards: int = 1, config: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or CONFIG))
    if shards == 1:
        save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
        return folder
    weight_map = {}
    for i, part in enumerate(_shards(sd, shards), 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in part.items()}, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def write_bin(folder: Path, sd: dict, shards: int = 1, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or CONFIG))
    if shards == 1:
        torch.save(sd, folder / "pytorch_model.bin")
        return folder
    weight_map = {}
    for i, part in enumerate(_shards(sd, shards), 1):
        name = f"pytorch_model-{i:05d}-of-{shards:05d}.bin"
        torch.save(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder
