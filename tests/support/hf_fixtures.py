"""Real-weights Hugging Face checkpoints rebuilt from GGUF files, for round-trip tests.

`smollm2_hf_checkpoint`: the SmolLM2-135M-Instruct Q4_1 GGUF turned back into a LlamaForCausalLM folder:
weights dequantized with gguf.quants, llama.cpp's q/k row permutation undone, stored as bf16 safetensors;
config.json from the GGUF metadata; tokenizer.json rebuilt from the GGUF vocabulary (tokens, merges, SmolLM2's
own pre-tokenizer: single digits, then GPT-2 byte-level); tokenizer_config.json with the special tokens and the
chat template. Built once per test session (a few seconds).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFReader

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


def hf_name(gguf_name: str) -> str:
    """blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight (LLaMA names)."""
    base, suffix = gguf_name.rsplit(".", 1)
    if base.startswith("blk."):
        _, layer, part = base.split(".", 2)
        return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{suffix}"
    return f"{_TOP_NAMES[base]}.{suffix}"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's converter `permute`: back to Hugging Face's rotate-half row order."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even as torch does (no NaNs here)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def save_bf16_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Write float32 arrays as a BF16 safetensors file (the format is a JSON header plus raw little-endian data)."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, arr in tensors.items():
        data = to_bf16_bits(arr).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def _weights(reader: GGUFReader, n_head: int, n_head_kv: int) -> dict[str, np.ndarray]:
    out = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        arr = arr.reshape(tuple(int(d) for d in reversed(t.shape.tolist())))
        if t.name.endswith("attn_q.weight"):
            arr = unpermute(arr, n_head)
        elif t.name.endswith("attn_k.weight"):
            arr = unpermute(arr, n_head_kv)
        out[hf_name(t.name)] = arr
    return out


def _config(reader: GGUFReader) -> dict:
    def hp(key):
        return _field(reader, f"llama.{key}")

    n_embd, n_head = int(hp("embedding_length")), int(hp("attention.head_count"))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": n_embd,
        "intermediate_size": int(hp("feed_forward_length")),
        "num_hidden_layers": int(hp("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(hp("attention.head_count_kv")),
        "head_dim": n_embd // n_head,
        "max_position_embeddings": int(hp("context_length")),
        "rms_norm_eps": float(f"{hp('attention.layer_norm_rms_epsilon'):.6g}"),
        "rope_theta": float(hp("rope.freq_base")),
        "vocab_size": int(hp("vocab_size")),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in {t.name for t in reader.tensors},
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id")),
        "torch_dtype": "bfloat16",
        "attention_bias": False,
        "mlp_bias": False,
    }


def build_smollm_tokenizer(reader: GGUFReader):
    """SmolLM2's tokenizer.json from the GGUF vocabulary: BPE over byte-level text, digits split one by one."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types) if kind == gguf.TokenType.CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


def _tokenizer_config(reader: GGUFReader) -> dict:
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")

    def token(key):
        return tokens[int(_field(reader, f"tokenizer.ggml.{key}_token_id"))]

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_field(reader, "llama.context_length")),
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "special": True,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
            for i, (t, kind) in enumerate(zip(tokens, types))
            if kind == gguf.TokenType.CONTROL
        },
    }


def gguf_to_hf_checkpoint(gguf_path: Path, out: Path) -> Path:
    """Write the LLaMA-architecture GGUF at `gguf_path` as a Hugging Face checkpoint folder `out`."""
    reader = GGUFReader(gguf_path)
    config = _config(reader)
    out.mkdir(parents=True, exist_ok=True)
    weights = _weights(reader, config["num_attention_heads"], config["num_key_value_heads"])
    save_bf16_safetensors(weights, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    build_smollm_tokenizer(reader).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(reader), indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]})
    )
    return out


@pytest.fixture(scope="session")
def smollm2_hf_checkpoint(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a bf16 Hugging Face LlamaForCausalLM checkpoint folder (read-only by convention)."""
    return gguf_to_hf_checkpoint(smollm2_gguf, tmp_path_factory.mktemp("smollm2-hf"))


# --- SentencePiece: a tokenizer.model rebuilt from a GGUF vocabulary -------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 fields are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _pb_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _pb_float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def sentencepiece_model_bytes(tokens, scores, types) -> bytes:
    """A LLaMA-style ModelProto (BPE, byte fallback, dummy prefix, no whitespace folding), written field by field
    after sentencepiece_model.proto so that the test needs no protobuf package."""
    pieces = b"".join(
        _pb_bytes(1, _pb_bytes(1, t.encode()) + _pb_float(2, s) + _pb_int(3, int(k)))
        for t, s, k in zip(tokens, scores, types)
    )
    trainer = (
        _pb_int(3, 2)
        + _pb_int(4, len(tokens))
        + _pb_int(25, 1)
        + _pb_int(35, 1)
        + _pb_int(40, 0)
        + _pb_int(41, 1)
        + _pb_int(42, 2)
        + _pb_int(43, -1)
    )
    normalizer = _pb_bytes(1, b"identity") + _pb_int(3, 1) + _pb_int(4, 0) + _pb_int(5, 1)
    return pieces + _pb_bytes(2, trainer) + _pb_bytes(3, normalizer)


def gguf_to_sentencepiece_folder(vocab_gguf: Path, out: Path) -> Path:
    """A tokenizer-only LLaMA checkpoint folder (tokenizer.model, tokenizer_config.json) from a vocab GGUF."""
    reader = GGUFReader(vocab_gguf)
    out.mkdir(parents=True, exist_ok=True)
    model = sentencepiece_model_bytes(
        _field(reader, "tokenizer.ggml.tokens"),
        _field(reader, "tokenizer.ggml.scores"),
        _field(reader, "tokenizer.ggml.token_type"),
    )
    (out / "tokenizer.model").write_bytes(model)
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token")),
                "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token")),
            }
        )
    )
    return out
