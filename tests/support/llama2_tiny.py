"""A tiny random LLaMA-2 fine-tune as the 2023 repos ship it (tests only): float32 weights in
`pytorch_model-0000k-of-0000n.bin` shards with their index, LLaMA-2's real SentencePiece tokenizer
(llama.cpp's ggml-vocab-llama-spm rebuilt as tokenizer.model), and the vocabulary quirks of fine-tunes.

The embedding is tiny (std 0.004) so that the first RMS norm divides by sqrt(mean(x^2) + eps) with mean(x^2)
near 1.6e-5: a converter that wrote 1e-5 where config.json says 1e-6 changes the logits by whole units.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from support.convert_tiny import write_bin
from support.hf_fixtures import gguf_to_sentencepiece_folder

LLAMA_SPM = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "vocab" / "ggml-vocab-llama-spm.gguf"
N_PIECES = 32000  # LLaMA-2's tokenizer.model


def config(rows: int = N_PIECES, eps: float = 1e-6) -> dict:
    return dict(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_hidden_layers=2,
        vocab_size=rows,
        max_position_embeddings=4096,
        rms_norm_eps=eps,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        torch_dtype="float32",
        bos_token_id=1,
        eos_token_id=2,
        use_cache=False,
    )


def state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """float32 weights of LlamaForCausalLM(cfg), spread so that greedy tokens and eps matter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            elif "embed_tokens" in name:
                param.normal_(0, 0.004)
            else:
                param.normal_(0, 0.3 if "lm_head" in name else 0.12)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def spm_tokenizer(out: Path) -> Path:
    """LLaMA-2's tokenizer.model and tokenizer_config.json in `out`."""
    return gguf_to_sentencepiece_folder(LLAMA_SPM, out)


def write_fine_tune(folder: Path, tokenizer: Path | None, rows: int = N_PIECES, eps: float = 1e-6, seed=0) -> Path:
    """The checkpoint in 2 float32 .bin shards; with `tokenizer` (a folder from spm_tokenizer) its files beside."""
    cfg = config(rows, eps)
    write_bin(folder, state_dict(cfg, seed), shards=2, config=cfg)
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    if tokenizer is not None:
        for name in ("tokenizer.model", "tokenizer_config.json"):
            shutil.copy(tokenizer / name, folder / name)
    return folder


def add_pad_token(folder: Path) -> Path:
    """What `tokenizer.add_special_tokens({"pad_token": "<pad>"})` leaves without resizing the embedding."""
    (folder / "added_tokens.json").write_text(json.dumps({"<pad>": N_PIECES}))
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["pad_token"] = "<pad>"
    tok_config["added_tokens_decoder"] = {str(N_PIECES): {"content": "<pad>", "special": True}}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    )
    return folder


def transformers_logits(folder: Path, token_lists: list[list[int]], eps: float | None = None):
    """transformers' float32 logits of the checkpoint in `folder` (rms_norm_eps overridden when `eps` is given)."""
    from transformers import LlamaForCausalLM

    extra = {} if eps is None else {"rms_norm_eps": eps}
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra)
    model.eval()
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].numpy() for ids in token_lists]
