"""Tiny random GLM-4 checkpoints for tests, in both layouts GLM-4 ships in, with a vocabulary trained here.

- `train_ranks`: byte-level BPE trained on a few texts with GLM-4's pre-tokenizer regex, tiktoken style
  (256 byte ranks, then one rank per merge); the merges are returned too, as the ground truth the converter
  must rebuild from the ranks alone.
- `reference_encoding`: tiktoken over those ranks plus GLM-4's special tokens: the reference tokenizer (what
  tokenization_chatglm.py does, without running it).
- `glm_config` / `native_state_dict`: transformers' GlmForCausalLM with random weights (norms and biases
  randomised too, so that a wrong epsilon, norm or bias shows); `to_remote` lays the same weights out as
  THUDM's remote-code ChatGLMModel.
- `write_native` / `write_remote`: the two checkpoint folders (bf16 safetensors, config.json,
  tokenizer.json or the ranks file, tokenizer_config.json with GLM-4's chat template). The remote folder also
  holds a `tokenization_chatglm.py` that leaves a marker file if anything ever imports it.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from pathlib import Path

import regex
import torch

GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
)
# glm-4-9b-chat's template without its tool branch (as in llama.cpp's template tests)
CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['content'] %}<|{{ item['role'] }}|>"
    "{{ item['metadata'] }}\n{{ item['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CHINESE_TEXTS = (
    "我最近总是失眠，晚上躺在床上脑子里全是工作上的事情，感觉压力特别大。",
    "考虑以下这个帖子，帖子体现了什么认知路径？我觉得自己什么都做不好，所有人都讨厌我。",
    "今天和朋友一起去公园散步，天气很好，心情也好了很多。",
    "有时候我觉得活着没有意义，不知道该跟谁说。",
    "考试又没考好，父母一定会很失望，我真是个失败者。",
    "谢谢大家的关心，我已经开始看心理医生了，情况在慢慢好转。",
)


def train_ranks(texts, n_merges: int) -> tuple[dict[bytes, int], list[tuple[bytes, bytes]]]:
    """Byte-level BPE: the most frequent adjacent pair within pre-tokenized words is merged, n_merges times."""
    counts = Counter(p.encode("utf-8") for t in texts for p in regex.findall(GLM4_PATTERN, t))
    words = [[bytes([b]) for b in w] for w in counts]
    freq = list(counts.values())
    ranks = {bytes([b]): b for b in range(256)}
    merges: list[tuple[bytes, bytes]] = []
    pairs: Counter = Counter()
    where: dict = defaultdict(set)

    def account(i: int, sign: int) -> None:
        for pair in zip(words[i], words[i][1:]):
            pairs[pair] += sign * freq[i]
            if sign > 0:
                where[pair].add(i)

    for i in range(len(words)):
        account(i, 1)
    while len(merges) < n_merges and pairs:
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        if a + b in ranks:  # same bytes already made another way: never merge this pair
            del pairs[(a, b)]
            continue
        ranks[a + b] = len(ranks)
        merges.append((a, b))
        for i in sorted(where.pop((a, b), ())):
            account(i, -1)
            words[i] = _merge_word(words[i], a, b)
            account(i, 1)
        for pair in [p for p, c in pairs.items() if c <= 0]:
            del pairs[pair]
    return ranks, merges


def _merge_word(word: list[bytes], a: bytes, b: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def special_ids(ranks: dict) -> dict[str, int]:
    return {text: len(ranks) + i for i, text in enumerate(SPECIALS)}


def reference_encoding(ranks: dict):
    import tiktoken

    return tiktoken.Encoding(
        name="glm4-tiny", pat_str=GLM4_PATTERN, mergeable_ranks=ranks, special_tokens=special_ids(ranks)
    )


def padded_vocab(ranks: dict) -> int:
    n = len(ranks) + len(SPECIALS)
    return (n + 63) // 64 * 64


def glm_config(ranks: dict, *, hidden=64, ffn=96, layers=2, heads=4, kv_heads=2, rope_theta=5e6, ctx=8192):
    from transformers import GlmConfig

    return GlmConfig(
        vocab_size=padded_vocab(ranks),
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=ctx,
        rms_norm_eps=1.5625e-07,
        attention_bias=True,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "partial_rotary_factor": 0.5},
        pad_token_id=special_ids(ranks)["<|endoftext|>"],
        eos_token_id=[special_ids(ranks)[t] for t in ("<|endoftext|>", "<|user|>", "<|observation|>")],
    )


def native_state_dict(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """GlmForCausalLM's weights, random; embeddings small as GLM's are; bf16-exact values."""
    from transformers import GlmForCausalLM

    with torch.device("meta"):  # names and shapes only
        shapes = {name: t.shape for name, t in GlmForCausalLM(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        t = torch.empty(shape, device="meta")
        if name.endswith("norm.weight"):
            value = 1 + 0.3 * torch.randn(t.shape, generator=g)
        elif name.endswith(".bias"):
            value = 0.3 * torch.randn(t.shape, generator=g)
        elif "embed_tokens" in name:
            value = 0.01 * torch.randn(t.shape, generator=g)
        else:
            value = torch.randn(t.shape, generator=g) / t.shape[-1] ** 0.5
        sd[name] = value.to(torch.bfloat16)
    return sd


def to_remote(sd: dict, n_layers: int) -> dict[str, torch.Tensor]:
    """The same weights under THUDM's remote-code names, q/k/v fused as query_key_value."""
    out = {
        "transformer.embedding.word_embeddings.weight": sd["model.embed_tokens.weight"],
        "transformer.encoder.final_layernorm.weight": sd["model.norm.weight"],
        "transformer.output_layer.weight": sd["lm_head.weight"],
        "transformer.rotary_pos_emb.inv_freq": torch.arange(8, dtype=torch.bfloat16),
    }
    for i in range(n_layers):
        src, dst = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        attn = src + "self_attn."
        out.update(
            {
                dst + "input_layernorm.weight": sd[src + "input_layernorm.weight"],
                dst + "post_attention_layernorm.weight": sd[src + "post_attention_layernorm.weight"],
                dst + "self_attention.query_key_value.weight": torch.cat(
                    [sd[attn + f"{x}_proj.weight"] for x in "qkv"]
                ),
                dst + "self_attention.query_key_value.bias": torch.cat([sd[attn + f"{x}_proj.bias"] for x in "qkv"]),
                dst + "self_attention.dense.weight": sd[attn + "o_proj.weight"],
                dst + "mlp.dense_h_to_4h.weight": sd[src + "mlp.gate_up_proj.weight"],
                dst + "mlp.dense_4h_to_h.weight": sd[src + "mlp.down_proj.weight"],
            }
        )
    return out


def remote_config(config) -> dict:
    """config.json of the remote-code layout, from the GlmConfig of the same model."""
    return {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "num_layers": config.num_hidden_layers,
        "padded_vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "ffn_hidden_size": config.intermediate_size,
        "kv_channels": config.head_dim,
        "num_attention_heads": config.num_attention_heads,
        "seq_length": config.max_position_embeddings,
        "layernorm_epsilon": config.rms_norm_eps,
        "rmsnorm": True,
        "apply_residual_connection_post_layernorm": False,
        "post_layer_norm": True,
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "multi_query_attention": True,
        "multi_query_group_num": config.num_key_value_heads,
        "rope_ratio": config.rope_parameters["rope_theta"] / 10000,
        "original_rope": True,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def _tokenizer_config(ranks: dict, **extra) -> dict:
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in special_ids(ranks).items()
    }
    return {
        "added_tokens_decoder": decoder,
        "additional_special_tokens": list(SPECIALS[6:]),
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "remove_space": False,
        **extra,
    }


MARKER = "imported.marker"
_TRAP = f"""# A stand-in for GLM's tokenization_chatglm.py: the converter must never import it.
import pathlib
pathlib.Path(__file__).with_name({MARKER!r}).write_text("imported")
raise RuntimeError("checkpoint code was executed")
"""


def write_remote(folder: Path, sd: dict, config, ranks: dict) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in to_remote(sd, config.num_hidden_layers).items()}, folder / "model.safetensors"
    )
    (folder / "config.json").write_text(json.dumps(remote_config(config)))
    lines = [f"{base64.b64encode(tok).decode()} {rank}" for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    (folder / "tokenizer.model").write_text("\n".join(lines) + "\n")
    tok_config = _tokenizer_config(
        ranks,
        tokenizer_class="ChatGLM4Tokenizer",
        auto_map={"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, ensure_ascii=False))
    for name in ("tokenization_chatglm.py", "configuration_chatglm.py", "modeling_chatglm.py"):
        (folder / name).write_text(_TRAP)
    return folder


def tokenizer_json(ranks: dict, merges: list[tuple[bytes, bytes]]) -> str:
    """A byte-level BPE tokenizer.json over the same ranks, built with the tokenizers library."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    text = lambda b: "".join(table[x] for x in b)  # noqa: E731
    tok = Tokenizer(
        models.BPE(
            vocab={text(b): r for b, r in ranks.items()},
            merges=[(text(a), text(b)) for a, b in merges],
            ignore_merges=True,
        )
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GLM4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    ids = special_ids(ranks)
    tok.post_processor = processors.TemplateProcessing(
        single="[gMASK] <sop> $A",
        pair="[gMASK] <sop> $A $B:1",
        special_tokens=[("[gMASK]", ids["[gMASK]"]), ("<sop>", ids["<sop>"])],
    )
    return tok.to_str()


def write_native(folder: Path, sd: dict, config, ranks: dict, merges) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    cfg = config.to_dict()
    cfg["architectures"] = ["GlmForCausalLM"]
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer.json").write_text(tokenizer_json(ranks, merges))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(_tokenizer_config(ranks, tokenizer_class="PreTrainedTokenizerFast"), ensure_ascii=False)
    )
    return folder
