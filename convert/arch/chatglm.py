"""GLM-4 (MentalGLM) in both layouts it ships in -> llama.cpp's `chatglm` architecture.

- THUDM remote code (`ChatGLMModel`, model_type chatglm): `transformer.encoder.layers.N`, fused
  `query_key_value` with bias, config keys num_layers, ffn_hidden_size, kv_channels, multi_query_group_num,
  padded_vocab_size, seq_length, layernorm_epsilon, rope_ratio (rope base = 10000 x rope_ratio).
- Hugging Face native (`GlmForCausalLM`): `model.layers.N`, separate q/k/v (+bias), fused gate_up_proj, config
  keys num_hidden_layers, intermediate_size, num_key_value_heads, head_dim, vocab_size, max_position_embeddings,
  rms_norm_eps, rope_theta and partial_rotary_factor (top level, or inside rope_parameters in transformers 5).
  llama.cpp's own converter ignores these HF keys and writes a wrong epsilon, rope base and context (field notes).

GLM's rope is interleaved, as llama.cpp's chatglm rope is, so q/k rows are written as they are; it rotates
the first partial_rotary_factor (remote code: always half) of each head. The feed-forward's first matrix is
gate-then-up in both layouts and becomes `ffn_up` (2 x n_ff rows); `rotary_pos_emb.inv_freq` is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

from .. import outtypes
from ..checkpoint import Checkpoint, LazyTensor, check_tensor, config_field
from ..errors import ConversionError
from ..gguf_out import OutTensor

GGUF_ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.CHATGLM]
_DROPPED = re.compile(r"(^|\.)(rotary_pos_emb|rotary_emb)\.inv_freq$")
GLM_ROPE_BASE = 10000.0  # the remote code's base, multiplied by rope_ratio


@dataclass(frozen=True)
class Hparams:
    remote: bool  # THUDM remote-code layout (else HF-native)
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    eps: float
    rope_base: float
    rope_dim: int
    qkv_bias: bool
    tied: bool

    @classmethod
    def from_config(cls, config: dict) -> Hparams:
        remote = "num_layers" in config or config.get("model_type") == "chatglm"
        return _remote_hparams(config) if remote else _native_hparams(config)


def _refuse(config: dict, key: str, unsupported, why: str) -> None:
    if key in config and config[key] == unsupported:
        raise ConversionError(f"config.json: {key} = {config[key]!r} is not supported ({why})")


def _remote_hparams(c: dict) -> Hparams:
    _refuse(c, "rmsnorm", False, "llama.cpp's chatglm uses RMSNorm")
    _refuse(
        c, "apply_residual_connection_post_layernorm", True, "llama.cpp's chatglm adds the residual before the norm"
    )
    _refuse(c, "add_bias_linear", True, "llama.cpp's chatglm has no output or feed-forward biases")
    _refuse(c, "post_layer_norm", False, "llama.cpp's chatglm always applies the final norm")
    n_head = int(config_field(c, "num_attention_heads"))
    n_embd = int(config_field(c, "hidden_size"))
    head_dim = int(c.get("kv_channels") or n_embd // n_head)
    n_head_kv = int(c.get("multi_query_group_num") or n_head) if c.get("multi_query_attention") else n_head
    return Hparams(
        remote=True,
        n_layer=int(config_field(c, "num_layers", "num_hidden_layers")),
        n_embd=n_embd,
        n_ff=int(config_field(c, "ffn_hidden_size")),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_vocab=int(config_field(c, "padded_vocab_size", "vocab_size")),
        n_ctx=int(config_field(c, "seq_length")),
        eps=float(c.get("layernorm_epsilon") or 1e-5),
        rope_base=GLM_ROPE_BASE * float(c.get("rope_ratio") or 1.0),
        rope_dim=head_dim // 2,
        qkv_bias=bool(c.get("add_qkv_bias", True)),
        tied=bool(c.get("tie_word_embeddings", False)),
    )


def _native_hparams(c: dict) -> Hparams:
    rope = c.get("rope_parameters") or {}
    kind = rope.get("rope_type") or (c.get("rope_scaling") or {}).get("rope_type") or "default"
    if kind != "default" or (c.get("rope_scaling") or {}).get("type") not in (None, "default"):
        raise ConversionError(f"config.json: rope scaling {kind!r} is not supported for GLM (only default)")
    n_head = int(config_field(c, "num_attention_heads"))
    n_embd = int(config_field(c, "hidden_size"))
    head_dim = int(c.get("head_dim") or n_embd // n_head)
    theta = c.get("rope_theta", rope.get("rope_theta"))
    partial = float(c.get("partial_rotary_factor", rope.get("partial_rotary_factor", 0.5)))
    rope_dim = head_dim * partial
    if rope_dim != int(rope_dim) or int(rope_dim) % 2:
        raise ConversionError(
            f"config.json: partial_rotary_factor {partial} gives {rope_dim} rotary dimensions "
            f"of {head_dim}; an even whole number is needed"
        )
    return Hparams(
        remote=False,
        n_layer=int(config_field(c, "num_hidden_layers")),
        n_embd=n_embd,
        n_ff=int(config_field(c, "intermediate_size")),
        n_head=n_head,
        n_head_kv=int(c.get("num_key_value_heads") or n_head),
        head_dim=head_dim,
        n_vocab=int(config_field(c, "vocab_size")),
        n_ctx=int(c.get("max_position_embeddings") or 8192),
        eps=float(c.get("rms_norm_eps") or 1e-5),
        rope_base=float(theta if theta is not None else 10000.0),
        rope_dim=int(rope_dim),
        qkv_bias=bool(c.get("attention_bias", True)),
        tied=bool(c.get("tie_word_embeddings", False)),
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
    writer.add_rope_dimension_count(hp.rope_dim)
    writer.add_rope_freq_base(hp.rope_base)
    if hp.head_dim * hp.n_head != hp.n_embd:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)


def expected_shapes(hp: Hparams) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor config.json implies, by checkpoint name."""
    q, kv, e, ff, v = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_embd, hp.n_ff, hp.n_vocab
    if hp.remote:
        top = {
            "transformer.embedding.word_embeddings.weight": (v, e),
            "transformer.encoder.final_layernorm.weight": (e,),
        }
        if not hp.tied:
            top["transformer.output_layer.weight"] = (v, e)
        layer = {
            "input_layernorm.weight": (e,),
            "post_attention_layernorm.weight": (e,),
            "self_attention.query_key_value.weight": (q + 2 * kv, e),
            "self_attention.dense.weight": (e, q),
            "mlp.dense_h_to_4h.weight": (2 * ff, e),
            "mlp.dense_4h_to_h.weight": (e, ff),
        }
        if hp.qkv_bias:
            layer["self_attention.query_key_value.bias"] = (q + 2 * kv,)
        prefix = "transformer.encoder.layers.{}."
    else:
        top = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,)}
        if not hp.tied:
            top["lm_head.weight"] = (v, e)
        layer = {
            "input_layernorm.weight": (e,),
            "post_attention_layernorm.weight": (e,),
            "self_attn.q_proj.weight": (q, e),
            "self_attn.k_proj.weight": (kv, e),
            "self_attn.v_proj.weight": (kv, e),
            "self_attn.o_proj.weight": (e, q),
            "mlp.gate_up_proj.weight": (2 * ff, e),
            "mlp.down_proj.weight": (e, ff),
        }
        if hp.qkv_bias:
            layer.update(
                {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)}
            )
        prefix = "model.layers.{}."
    shapes = dict(top)
    for i in range(hp.n_layer):
        shapes.update({prefix.format(i) + name: shape for name, shape in layer.items()})
    return shapes


def _check(ckpt: Checkpoint, hp: Hparams) -> list[LazyTensor]:
    expected = expected_shapes(hp)
    kept = []
    for name, tensor in ckpt.tensors():
        if _DROPPED.search(name) or (hp.tied and name in ("lm_head.weight", "transformer.output_layer.weight")):
            continue
        shape = expected.pop(name, None)
        if shape is None:
            raise ConversionError(
                f"{tensor.file.name}: tensor {name} is not part of a "
                f"{'ChatGLMModel' if hp.remote else 'GlmForCausalLM'} model"
            )
        check_tensor(tensor, name, shape)
        kept.append(tensor)
    if expected:
        missing = min(expected)
        raise ConversionError(
            f"{ckpt.folder.name}: tensor {missing} is missing ({len(expected)} expected tensor(s) absent)"
        )
    return kept


def _order_key(gguf_name: str) -> tuple:
    m = re.match(r"blk\.(\d+)\.", gguf_name)
    if m:
        return (1, int(m.group(1)), gguf_name)
    return ({"token_embd.weight": 0, "output_norm.weight": 2}.get(gguf_name, 3), 0, gguf_name)


def plan(ckpt: Checkpoint, outtype: str) -> list[OutTensor]:
    """The output tensors in llama.cpp's names and order, after checking every shape against config.json."""
    hp = Hparams.from_config(ckpt.config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.CHATGLM, hp.n_layer)
    out = []
    for tensor in _check(ckpt, hp):
        gguf_name = names.get_name(tensor.name.removeprefix("transformer."), try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"{tensor.file.name}: tensor {tensor.name} has no llama.cpp name")
        qtype = outtypes.tensor_type(tensor.shape, outtype)
        out.append(OutTensor(gguf_name, tuple(tensor.shape), qtype, _producer(tensor, qtype)))
    return sorted(out, key=lambda t: _order_key(t.name))


def _producer(tensor: LazyTensor, qtype):
    return lambda: outtypes.encode(tensor.load(), qtype)
