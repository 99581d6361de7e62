"""The tensor names and shapes of a Hugging Face LLaMA checkpoint, from its config (no torch: fast-tier tests
build tiny checkpoints from it with numpy, support/convert_tiny.py with torch)."""

from __future__ import annotations


def llama_shapes(config: dict, *, lm_head: bool, rotary: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor of `config`'s LLaMA: `lm_head` for an untied output, `rotary` for the `inv_freq` buffers old
    checkpoints carry."""
    h, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = head_dim * config["num_key_value_heads"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if lm_head:
        shapes["lm_head.weight"] = (v, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (heads * head_dim, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, heads * head_dim),
            p + "mlp.gate_proj.weight": (ff, h),
            p + "mlp.up_proj.weight": (ff, h),
            p + "mlp.down_proj.weight": (h, ff),
        }
        if rotary:
            shapes[p + "self_attn.rotary_emb.inv_freq"] = (head_dim // 2,)
    return shapes
