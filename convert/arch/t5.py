"""T5 (T5ForConditionalGeneration: t5-large, MentalT5): hyperparameters, tensor names, the scaled output.

The token embedding is stored up to three times (shared, encoder.embed_tokens, decoder.embed_tokens): one
copy is kept. With tied embeddings Hugging Face multiplies the decoder output by d_model^-0.5 before the LM
head and llama.cpp does not, so the output weight is written pre-scaled: greedy choices would survive without
it, probabilities would not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf
import numpy as np

from .. import outtypes
from ..checkpoint import Checkpoint, LazyTensor, check_tensor, config_field
from ..errors import ConversionError
from ..gguf_out import OutTensor

GGUF_ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.T5]
EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
LLAMA_CPP_MAX_DISTANCE = 128  # llama.cpp's relative position buckets assume this
DEFAULT_CTX = 512  # what t5 checkpoints were trained on when config.json gives no n_positions


@dataclass(frozen=True)
class Hparams:
    n_embd: int
    n_ff: int
    n_layer: int
    n_dec_layer: int
    n_head: int
    d_kv: int
    n_vocab: int
    n_ctx: int
    eps: float
    n_buckets: int
    gated: bool
    tied: bool
    decoder_start: int

    @classmethod
    def from_config(cls, config: dict) -> Hparams:
        if int(config.get("relative_attention_max_distance", LLAMA_CPP_MAX_DISTANCE)) != LLAMA_CPP_MAX_DISTANCE:
            raise ConversionError(
                f"config.json: relative_attention_max_distance must be {LLAMA_CPP_MAX_DISTANCE} for llama.cpp"
            )
        ffn = str(config.get("feed_forward_proj", "relu"))
        if ffn not in ("relu", "gated-gelu"):
            raise ConversionError(f"config.json: feed_forward_proj {ffn!r} is not supported (relu or gated-gelu)")
        n_layer = int(config_field(config, "num_layers"))
        return cls(
            n_embd=int(config_field(config, "d_model")),
            n_ff=int(config_field(config, "d_ff")),
            n_layer=n_layer,
            n_dec_layer=int(config.get("num_decoder_layers") or n_layer),
            n_head=int(config_field(config, "num_heads")),
            d_kv=int(config_field(config, "d_kv")),
            n_vocab=int(config_field(config, "vocab_size")),
            n_ctx=int(config.get("n_positions") or DEFAULT_CTX),
            eps=float(config.get("layer_norm_epsilon", 1e-6)),
            n_buckets=int(config.get("relative_attention_num_buckets", 32)),
            gated=ffn == "gated-gelu",
            tied=bool(config.get("tie_word_embeddings", True)),
            decoder_start=int(config.get("decoder_start_token_id", config.get("pad_token_id", 0)) or 0),
        )


def add_metadata(writer: gguf.GGUFWriter, config: dict) -> None:
    hp = Hparams.from_config(config)
    writer.add_vocab_size(hp.n_vocab)
    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_block_count(hp.n_layer)
    writer.add_decoder_block_count(hp.n_dec_layer)
    writer.add_head_count(hp.n_head)
    writer.add_key_length(hp.d_kv)
    writer.add_value_length(hp.d_kv)
    writer.add_layer_norm_eps(hp.eps)
    writer.add_layer_norm_rms_eps(hp.eps)
    writer.add_relative_attn_buckets_count(hp.n_buckets)
    writer.add_decoder_start_token_id(hp.decoder_start)


def _ffn_shapes(prefix: str, hp: Hparams) -> dict[str, tuple[int, ...]]:
    up = ["wi_0", "wi_1"] if hp.gated else ["wi"]
    shapes = {f"{prefix}DenseReluDense.{w}.weight": (hp.n_ff, hp.n_embd) for w in up}
    shapes[f"{prefix}DenseReluDense.wo.weight"] = (hp.n_embd, hp.n_ff)
    shapes[f"{prefix}layer_norm.weight"] = (hp.n_embd,)
    return shapes


def _attention_shapes(prefix: str, hp: Hparams, relative: bool) -> dict[str, tuple[int, ...]]:
    inner = hp.n_head * hp.d_kv
    shapes = {f"{prefix}{w}.weight": (inner, hp.n_embd) for w in ("q", "k", "v")}
    shapes[f"{prefix}o.weight"] = (hp.n_embd, inner)
    if relative:
        shapes[f"{prefix}relative_attention_bias.weight"] = (hp.n_buckets, hp.n_head)
    return shapes


def expected_shapes(hp: Hparams) -> dict[str, tuple[int, ...]]:
    """Every tensor config.json implies, by Hugging Face name (the embedding under one of its names)."""
    shapes = {"encoder.final_layer_norm.weight": (hp.n_embd,), "decoder.final_layer_norm.weight": (hp.n_embd,)}
    if not hp.tied:
        shapes["lm_head.weight"] = (hp.n_vocab, hp.n_embd)
    for i in range(hp.n_layer):
        p = f"encoder.block.{i}.layer."
        shapes.update(_attention_shapes(p + "0.SelfAttention.", hp, relative=i == 0))
        shapes[p + "0.layer_norm.weight"] = (hp.n_embd,)
        shapes.update(_ffn_shapes(p + "1.", hp))
    for i in range(hp.n_dec_layer):
        p = f"decoder.block.{i}.layer."
        shapes.update(_attention_shapes(p + "0.SelfAttention.", hp, relative=i == 0))
        shapes[p + "0.layer_norm.weight"] = (hp.n_embd,)
        shapes.update(_attention_shapes(p + "1.EncDecAttention.", hp, relative=False))
        shapes[p + "1.layer_norm.weight"] = (hp.n_embd,)
        shapes.update(_ffn_shapes(p + "2.", hp))
    return shapes


def _check(ckpt: Checkpoint, hp: Hparams) -> tuple[LazyTensor, list[LazyTensor]]:
    """(the token embedding, every other tensor kept), after checking names, shapes and dtypes."""
    expected = expected_shapes(hp)
    embedding, kept = None, []
    for name, tensor in ckpt.tensors():
        if name in EMBEDDINGS or (hp.tied and name == "lm_head.weight"):
            shape = (hp.n_vocab, hp.n_embd)
        else:
            shape = expected.pop(name, None)
        if shape is None:
            raise ConversionError(f"{tensor.file.name}: tensor {name} is not part of a T5 model")
        check_tensor(tensor, name, shape)
        if name in EMBEDDINGS:
            embedding = embedding or tensor
        elif name != "lm_head.weight" or not hp.tied:
            kept.append(tensor)
    if embedding is None:
        raise ConversionError(f"{ckpt.folder.name}: tensor shared.weight is missing (no token embedding)")
    if expected:
        missing = sorted(expected)[0]
        raise ConversionError(
            f"{ckpt.folder.name}: tensor {missing} is missing ({len(expected)} expected tensor(s) absent)"
        )
    return embedding, kept


def _order_key(name: str) -> tuple:
    m = re.match(r"(encoder|decoder)\.block\.(\d+)\.", name)
    if m:
        return (1 if m.group(1) == "encoder" else 2, int(m.group(2)), name)
    return (3, 0, name)


def plan(ckpt: Checkpoint, outtype: str) -> list[OutTensor]:
    """token_embd, output (scaled when tied), then encoder and decoder blocks, in llama.cpp's names."""
    hp = Hparams.from_config(ckpt.config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5, max(hp.n_layer, hp.n_dec_layer))
    embedding, kept = _check(ckpt, hp)
    shape = (hp.n_vocab, hp.n_embd)
    embd_type = outtypes.tensor_type(shape, outtype)
    out = [OutTensor("token_embd.weight", shape, embd_type, _producer(embedding, embd_type))]
    if hp.tied:
        out.append(OutTensor("output.weight", shape, embd_type, _producer(embedding, embd_type, output_scale(hp))))
    for tensor in sorted(kept, key=lambda t: _order_key(t.name)):
        gguf_name = names.get_name(tensor.name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"{tensor.file.name}: tensor {tensor.name} has no llama.cpp name")
        # relative position biases are looked up by row (ggml_get_rows): kept exact, as llama.cpp's converter does
        qtype = outtypes.tensor_type(tensor.shape, outtype, keep_f32="relative_attention_bias" in tensor.name)
        out.append(OutTensor(gguf_name, tuple(tensor.shape), qtype, _producer(tensor, qtype)))
    return out


def output_scale(hp: Hparams) -> float:
    """What Hugging Face multiplies the decoder output by before a tied LM head."""
    return hp.n_embd**-0.5


def _producer(tensor: LazyTensor, qtype, scale: float | None = None):
    if scale is None:
        return lambda: outtypes.encode(tensor.load(), qtype)
    return lambda: outtypes.encode(tensor.load().astype(np.float32) * np.float32(scale), qtype)
