"""GLM-4's tiktoken-style vocabulary (`tokenizer.model`: "<base64 token> <rank>" per line) as a GGUF BPE vocabulary.

A ranks file is byte-level BPE with the merges left implicit: applying merges in rank order must rebuild every
token, so the merge that made a token of rank r is the last step of BPE over its bytes using only ranks below r
(as llama.cpp's converter rebuilds Qwen's). Tokens are written in GPT-2's byte-to-character mapping, which is
what llama.cpp's `gpt2` tokenizer model reads. The ranks file carries no pre-tokenizer: GLM's regex lives in
`tokenization_chatglm.py`, which is never run; llama.cpp knows that regex as `chatglm-bpe`.

The special tokens come from tokenizer_config.json's `added_tokens_decoder` (GLM-4 lists them there), else
GLM-4's fixed list placed right after the ranks, as its tokenizer numbers them. All are CONTROL, so text a
user types never becomes one. `glm_special_tokens` then sets what the engine needs for GLM whatever the
vocabulary's file: eos `<|endoftext|>`, eot `<|user|>`, eom `<|observation|>` (the three ends of a turn) and
add_bos false (the prompt template writes `[gMASK]<sop>` itself).
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from pathlib import Path

import gguf

from .errors import ConversionError
from .vocab_base import Vocab, read_json

PRE_TOKENIZER = "chatglm-bpe"
# GLM-4's pre-tokenizer regex (tokenization_chatglm.py; the Split of a GLM-4 tokenizer.json)
GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GLM-4's special tokens in id order after the ranks (tokenization_chatglm.py / tokenizer_config.json).
GLM4_SPECIAL_TOKENS = (
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
# GGUF special-token kind -> GLM token text
GLM4_ROLES = {"eos": "<|endoftext|>", "eot": "<|user|>", "eom": "<|observation|>", "unk": "<|endoftext|>"}


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible mapping of bytes to printable characters (the byte-level BPE token alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def token_text(token: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


def read_ranks(path: Path) -> dict[bytes, int]:
    """The ranks file as {token bytes: rank}; every malformed line is reported with its number."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as fp:
        for number, line in enumerate(fp, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError("expected '<base64 token> <rank>'")
                token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
            except (ValueError, binascii.Error) as exc:
                raise ConversionError(f"{path}: line {number} is not a tiktoken rank ({exc})") from None
            if token in ranks:
                raise ConversionError(f"{path}: line {number}: token {parts[0].decode()} appears twice")
            ranks[token] = rank
    if not ranks:
        raise ConversionError(f"{path}: no ranks in the file")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ConversionError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ConversionError(f"{path}: byte {missing[0]:#04x} has no rank (byte-level BPE needs all 256)")
    return ranks


def _bpe_last_merge(ranks: dict[bytes, int], token: bytes, max_rank: int) -> tuple[bytes, bytes] | None:
    """BPE over `token`'s bytes with merges of rank below `max_rank`; the two parts left, or None if not two."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = None, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            return None
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def rebuild_merges(ranks: dict[bytes, int], path: Path | str = "tokenizer.model") -> list[str]:
    """The merges, in rank order, as llama.cpp stores them ("left right" in token text)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        pair = _bpe_last_merge(ranks, token, rank)
        if pair is None:
            raise ConversionError(f"{path}: token of rank {rank} cannot be built from lower-ranked tokens")
        merges.append(f"{token_text(pair[0])} {token_text(pair[1])}")
    return merges


def special_tokens(folder: Path, n_ranks: int) -> dict[int, str]:
    """{id: text} of the special tokens: tokenizer_config.json's added_tokens_decoder, else GLM-4's list."""
    config_path = folder / "tokenizer_config.json"
    config = read_json(config_path) or {}
    decoder = config.get("added_tokens_decoder") or {}
    found: dict[int, str] = {}
    for key, entry in decoder.items():
        try:
            token_id, text = int(key), entry["content"]
        except (ValueError, TypeError, KeyError):
            raise ConversionError(f"{config_path}: added_tokens_decoder entry {key!r} is unreadable") from None
        if token_id < n_ranks:
            raise ConversionError(
                f"{config_path}: added token {text!r} has id {token_id}, inside the {n_ranks} ranks of tokenizer.model"
            )
        found[token_id] = text
    return found or {n_ranks + i: text for i, text in enumerate(GLM4_SPECIAL_TOKENS)}


def load_tiktoken_vocab(path: Path) -> Vocab:
    """The Vocab of a GLM-4 ranks file and the special tokens beside it (config padding is done by the caller)."""
    ranks = read_ranks(path)
    specials = special_tokens(path.parent, len(ranks))
    size = max(len(ranks), max(specials) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, rank in ranks.items():
        tokens[rank], types[rank] = token_text(token), gguf.TokenType.NORMAL
    for token_id, text in specials.items():
        tokens[token_id], types[token_id] = text, gguf.TokenType.CONTROL
    merges = rebuild_merges(ranks, path)
    return Vocab(model="gpt2", pre=PRE_TOKENIZER, tokens=tokens, token_types=types, merges=merges, n_base=len(ranks))


def glm_special_tokens(vocab: Vocab) -> None:
    """GLM-4's turn ends and no BOS, set from the token texts (whatever config.json's eos list says)."""
    for kind, text in GLM4_ROLES.items():
        if text in vocab.tokens:
            vocab.special_ids[kind] = vocab.tokens.index(text)
    vocab.special_ids.pop("bos", None)
    vocab.add_special["bos"] = False
    vocab.add_special["eos"] = False
