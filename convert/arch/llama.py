"""LLaMA (LlamaForCausalLM: LLaMA-2, MentaLLaMA, SmolLM2): hyperparameters, tensor names and the q/k permutation."""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf
import numpy as np

from .. import outtypes
from ..checkpoint import Checkpoint, LazyTensor, check_tensor, config_field
from ..errors import ConversionError
from ..gguf_out import OutTensor

GGUF_ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
_DROPPED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class Hparams:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    eps: float
    rope_theta: float | None
    tied: bool

    @classmethod
    def from_config(cls, config: dict) -> Hparams:
        n_head = int(config_field(config, "num_attention_heads"))
        n_embd = int(config_field(config, "hidden_size"))
        return cls(
            n_layer=int(config_field(config, "num_hidden_layers")),
            n_embd=n_embd,
            n_ff=int(config_field(config, "intermediate_size")),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            head_dim=int(config.get("head_dim") or n_embd // n_head),
            n_vocab=int(config_field(config, "vocab_size")),
            n_ctx=int(config.get("max_position_embeddings") or 2048),
            # 1e-5 in LLaMA-2 and MentaLLaMA-13B, 1e-6 in MentaLLaMA-7B: read, never a default
            eps=float(config_field(config, "rms_norm_eps")),
            rope_theta=config.get("rope_theta"),
            tied=bool(config.get("tie_word_embeddings", False)),
        )


def add_metadata(writer: gguf.GGUFWriter, config: dict) -> None:
    hp = Hparams.from_config(config)
    writer.add_vocab_size(hp.n_vocab)
    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_block_count(hp.n_layer)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_layer_norm_rms_eps(hp.eps)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_key_length(hp.head_dim)  # as llama.cpp's converter writes them
    writer.add_value_length(hp.head_dim)
    if hp.rope_theta is not None:
        writer.add_rope_freq_base(float(hp.rope_theta))
    _add_rope_scaling(writer, config)


def _add_rope_scaling(writer: gguf.GGUFWriter, config: dict) -> None:
    scaling = config.get("rope_scaling")
    if not scaling:
        return
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "default":
        return
    if kind != "linear":
        raise ConversionError(f"config.json: rope_scaling type {kind!r} is not supported (only linear)")
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(float(scaling["factor"]))


def expected_shapes(hp: Hparams) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor config.json implies, by Hugging Face name (biases are optional)."""
    q_rows, kv_rows = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    shapes = {"model.embed_tokens.weight": (hp.n_vocab, hp.n_embd), "model.norm.weight": (hp.n_embd,)}
    if not hp.tied:
        shapes["lm_head.weight"] = (hp.n_vocab, hp.n_embd)
    for i in range(hp.n_layer):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (hp.n_embd,),
                p + "post_attention_layernorm.weight": (hp.n_embd,),
                p + "self_attn.q_proj.weight": (q_rows, hp.n_embd),
                p + "self_attn.k_proj.weight": (kv_rows, hp.n_embd),
                p + "self_attn.v_proj.weight": (kv_rows, hp.n_embd),
                p + "self_attn.o_proj.weight": (hp.n_embd, q_rows),
                p + "mlp.gate_proj.weight": (hp.n_ff, hp.n_embd),
                p + "mlp.up_proj.weight": (hp.n_ff, hp.n_embd),
                p + "mlp.down_proj.weight": (hp.n_embd, hp.n_ff),
            }
        )
    return shapes


_OPTIONAL_BIASES = {
    "self_attn.q_proj.bias": "q",
    "self_attn.k_proj.bias": "kv",
    "self_attn.v_proj.bias": "kv",
    "self_attn.o_proj.bias": "embd",
    "mlp.gate_proj.bias": "ff",
    "mlp.up_proj.bias": "ff",
    "mlp.down_proj.bias": "embd",
}


def _bias_shape(name: str, hp: Hparams) -> tuple[int, ...] | None:
    m = re.fullmatch(r"model\.layers\.\d+\.(.+)", name)
    kind = _OPTIONAL_BIASES.get(m.group(1)) if m else None
    sizes = {"q": hp.n_head * hp.head_dim, "kv": hp.n_head_kv * hp.head_dim, "embd": hp.n_embd, "ff": hp.n_ff}
    return (sizes[kind],) if kind else None


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face rotates the two halves of each head; llama.cpp rotates interleaved pairs: reorder rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _check(ckpt: Checkpoint, hp: Hparams) -> list[LazyTensor]:
    expected = expected_shapes(hp)
    kept = []
    for name, tensor in ckpt.tensors():
        if _DROPPED.search(name) or (hp.tied and name == "lm_head.weight"):
            continue
        shape = expected.pop(name, None) or _bias_shape(name, hp)
        if shape is None:
            raise ConversionError(f"{tensor.file.name}: tensor {name} is not part of a LLaMA model")
        check_tensor(tensor, name, shape)
        kept.append(tensor)
    if expected:
        missing = sorted(expected, key=_order_key)[0]
        raise ConversionError(
            f"{ckpt.folder.name}: tensor {missing} is missing ({len(expected)} expected tensor(s) absent)"
        )
    return kept


def _order_key(name: str) -> tuple:
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if "embed_tokens" in name else 2 if name == "model.norm.weight" else 3, 0, name)


def _transform(name: str, hp: Hparams):
    if name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias"):
        return lambda w: permute(w, hp.n_head)
    if name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias"):
        return lambda w: permute(w, hp.n_head_kv)
    return lambda w: w


def plan(ckpt: Checkpoint, outtype: str) -> list[OutTensor]:
    """The output tensors in llama.cpp's names and order, after checking every shape against config.json."""
    hp = Hparams.from_config(ckpt.config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp.n_layer)
    out = []
    for tensor in sorted(_check(ckpt, hp), key=lambda t: _order_key(t.name)):
        gguf_name = names.get_name(tensor.name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"{tensor.file.name}: tensor {tensor.name} has no llama.cpp name")
        qtype = outtypes.tensor_type(tensor.shape, outtype)
        out.append(
            OutTensor(gguf_name, tuple(tensor.shape), qtype, _producer(tensor, _transform(tensor.name, hp), qtype))
        )
    return out


def _producer(tensor: LazyTensor, transform, qtype):
    return lambda: outtypes.encode(transform(tensor.load()), qtype)
