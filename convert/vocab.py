"""A checkpoint's vocabulary as llama.cpp wants it in a GGUF file.

`load_vocab(folder)` picks the kind from the files present, one function per kind:
- SentencePiece `tokenizer.model` (LLaMA, MentaLLaMA): tokens, scores and piece types; `tokenizer.ggml.model = "llama"`;
- byte-level BPE `tokenizer.json` (SmolLM2, HF-native GLM): tokens, merges and the pre-tokenizer name llama.cpp
  must be told (`tokenizer.ggml.pre`), found as llama.cpp's converter finds it: by hashing the ids the tokenizer
  gives on a fixed text.
- GLM-4's tiktoken ranks file (remote-code layout, also named `tokenizer.model`): see vocab_tiktoken.
Special token ids, add_bos/add_eos and the chat template come from tokenizer_config.json, config.json and
generation_config.json, whatever the kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import gguf

from . import spm_proto
from .bpe_pre_hashes import CHECK_TEXT, PRE_TOKENIZER_BY_HASH
from .errors import ConversionError
from .vocab_tiktoken import GLM4_PATTERN, glm_special_tokens, load_tiktoken_vocab
from .vocab_tiktoken import PRE_TOKENIZER as GLM_PRE_TOKENIZER

TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "tokenizer.json")
_T = gguf.TokenType


@dataclass
class Vocab:
    """Everything the tokenizer part of a GGUF file holds; `write` adds it to a writer."""

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (BPE)
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None  # SentencePiece only
    merges: list[str] = field(default_factory=list)  # BPE only, "a b" per merge
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad, sep, eot, ...
    add_special: dict[str, bool] = field(default_factory=dict)  # bos / eos -> add_bos_token / add_eos_token
    add_space_prefix: bool | None = None
    chat_template: str | list | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        for kind, token_id in self.special_ids.items():
            if handler := getattr(writer, f"add_{kind}_token_id", None):  # GGUF has no key for some (cls)
                handler(token_id)
        for kind, value in self.add_special.items():
            if handler := getattr(writer, f"add_add_{kind}_token", None):
                handler(value)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)


def load_vocab(folder: str | Path) -> Vocab:
    """The vocabulary of the checkpoint in `folder`, padded to config.json's vocab_size when that is larger."""
    folder = Path(folder)
    spm_file, json_file = folder / "tokenizer.model", folder / "tokenizer.json"
    if not spm_file.is_file():
        spm_file = folder / "spiece.model"  # T5's name
    if spm_file.is_file() and _is_tiktoken_ranks(spm_file):
        vocab = load_tiktoken_vocab(spm_file)
    elif spm_file.is_file():
        vocab = _load_sentencepiece(spm_file)
    elif json_file.is_file():
        vocab = _load_bpe(json_file)
    else:
        raise ConversionError(f"{folder}: no tokenizer found (looked for {', '.join(TOKENIZER_FILES)})")
    _pad_to_config(vocab, folder)
    _add_special_tokens(vocab, folder)
    if vocab.pre in (GLM_PRE_TOKENIZER, "glm4"):  # GLM-4 (the glm4 hash is glm-4-9b-hf's tokenizer.json)
        glm_special_tokens(vocab)
    return vocab


def _is_tiktoken_ranks(path: Path) -> bool:
    """GLM ships its tiktoken ranks as `tokenizer.model` too: text lines of "<base64 token> <rank>"."""
    with open(path, "rb") as f:
        head = f.read(256).split(b"\n", 1)[0].split(b" ")
    return len(head) == 2 and head[1].isdigit() and re.fullmatch(rb"[A-Za-z0-9+/=]+", head[0]) is not None


# --- SentencePiece -------------------------------------------------------------------------------------------


def _load_sentencepiece(path: Path) -> Vocab:
    try:
        proto = spm_proto.parse_model(path.read_bytes())
    except ValueError as exc:
        raise ConversionError(f"{path}: not a SentencePiece model ({exc})") from None
    if proto.model_type == spm_proto.UNIGRAM:
        from .vocab_unigram import load_unigram

        return load_unigram(path, proto)
    if proto.model_type != spm_proto.BPE:
        raise ConversionError(
            f"{path}: SentencePiece model type {proto.model_type} is not supported (only the BPE kind LLaMA uses)"
        )
    vocab = Vocab(
        model="llama",
        pre="default",
        tokens=list(proto.pieces),
        token_types=list(proto.types),
        scores=list(proto.scores),
        add_space_prefix=proto.add_dummy_prefix,
    )
    _add_spm_added_tokens(vocab, path.parent)
    return vocab


def _add_spm_added_tokens(vocab: Vocab, folder: Path) -> None:
    """added_tokens.json and tokenizer_config's added_tokens_decoder, as llama.cpp's converter reads them."""
    added = _read_json(folder / "added_tokens.json") or {}
    for text, token_id in sorted(added.items(), key=lambda kv: kv[1]):
        _set_token(vocab, int(token_id), text, _T.USER_DEFINED, folder / "added_tokens.json")
    decoder = (_read_json(folder / "tokenizer_config.json") or {}).get("added_tokens_decoder") or {}
    for key, entry in decoder.items():
        token_id = int(key)
        if (
            token_id < len(vocab)
            and vocab.tokens[token_id] == entry["content"]
            and vocab.token_types[token_id] in (_T.CONTROL, _T.UNKNOWN, _T.BYTE)
        ):
            continue  # the proto already types it
        kind = _T.CONTROL if entry.get("special") else _T.USER_DEFINED
        _set_token(vocab, token_id, entry["content"], kind, folder / "tokenizer_config.json")


def _set_token(vocab: Vocab, token_id: int, text: str, kind: int, source: Path) -> None:
    if token_id > len(vocab):
        _pad(vocab, token_id)
    if token_id == len(vocab):
        vocab.tokens.append(text)
        vocab.token_types.append(kind)
        vocab.scores.append(-1000.0)
    else:
        vocab.tokens[token_id], vocab.token_types[token_id], vocab.scores[token_id] = text, kind, -1000.0


# --- byte-level BPE (tokenizer.json) --------------------------------------------------------------------------


def _load_bpe(path: Path) -> Vocab:
    from tokenizers import Tokenizer

    data = _read_json(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConversionError(
            f"{path}: only byte-level BPE tokenizer.json files are supported "
            f"(model type {model.get('type')!r}, byte_fallback {model.get('byte_fallback')})"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises its own Exception type
        raise ConversionError(f"{path}: unreadable tokenizer ({exc})") from None
    by_id = {i: text for text, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    added = tokenizer.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(max(by_id) + 1):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(_T.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(_added_token_type(added[i]) if i in added else _T.NORMAL)
    pre = _pre_tokenizer_name(tokenizer, data, path)
    vocab = Vocab(
        model="gpt2", pre=pre, tokens=tokens, token_types=types, merges=_merges(model.get("merges") or [], path)
    )
    vocab.add_special.update(_added_by_post_processor(tokenizer, vocab, data))
    return vocab


def _added_token_type(token) -> int:
    """Special added tokens are CONTROL, so that text typed by a user never parses as one."""
    return _T.CONTROL if token.special else _T.USER_DEFINED


def detect_pre_tokenizer(encode: Callable[[str], list[int]], path: Path | str = "tokenizer.json") -> str:
    """The llama.cpp pre-tokenizer name, as llama.cpp's converter finds it: sha256 of the ids `encode` gives
    (special tokens added, as transformers' `encode` does) on llama.cpp's check text. Any tokenizer fits: the
    `tokenizers` library here, tiktoken ranks for GLM."""
    digest = sha256(str(list(encode(CHECK_TEXT))).encode()).hexdigest()
    if digest not in PRE_TOKENIZER_BY_HASH:
        raise ConversionError(f"{path}: pre-tokenizer not known to llama.cpp (token hash {digest})")
    return PRE_TOKENIZER_BY_HASH[digest][0]


# pre-tokenizers recognised by their regex when the hash is unknown (a retrained or cut-down vocabulary)
PRE_TOKENIZER_BY_REGEX = {GLM4_PATTERN: GLM_PRE_TOKENIZER}


def _pre_tokenizer_name(tokenizer, data: dict, path: Path) -> str:
    try:
        return detect_pre_tokenizer(lambda text: tokenizer.encode(text).ids, path)
    except ConversionError:
        if (name := PRE_TOKENIZER_BY_REGEX.get(_split_regex(data.get("pre_tokenizer")))) is None:
            raise
        return name


def _split_regex(pre_tokenizer: dict | None) -> str | None:
    """The regex of the (first) Split step of a tokenizer.json pre-tokenizer."""
    if not isinstance(pre_tokenizer, dict):
        return None
    if pre_tokenizer.get("type") == "Sequence":
        return next(filter(None, map(_split_regex, pre_tokenizer.get("pretokenizers") or [])), None)
    if pre_tokenizer.get("type") == "Split":
        return (pre_tokenizer.get("pattern") or {}).get("Regex")
    return None


def _merges(merges: list, path: Path) -> list[str]:
    """Merges as llama.cpp stores them: "a b"; the newer pair form has spaces encoded as gguf's SpecialVocab does."""
    out = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        elif isinstance(merge, list) and len(merge) == 2:
            out.append(" ".join(part.replace(" ", chr(ord(" ") + 256)) for part in merge))
        else:
            raise ConversionError(f"{path}: unreadable merge {merge!r}")
    return out


def _added_by_post_processor(tokenizer, vocab: Vocab, data: dict) -> dict[str, bool]:
    """Whether encoding with special tokens adds a leading/trailing token: what add_bos/add_eos must say."""
    if not data.get("post_processor"):
        return {"bos": False, "eos": False}
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    if full == plain:
        return {"bos": False, "eos": False}
    return {}  # a template adds tokens: leave it to tokenizer_config.json (and gguf's SpecialVocab)


# --- shared: special tokens, flags, chat template, padding -----------------------------------------------------


def _add_special_tokens(vocab: Vocab, folder: Path) -> None:
    special = gguf.SpecialVocab(folder, load_merges=False, n_vocab=len(vocab))
    for kind, token_id in special.special_token_ids.items():
        vocab.special_ids.setdefault(kind, token_id)
    for kind, value in special.add_special_token.items():
        if kind in ("bos", "eos", "sep"):
            vocab.add_special[kind] = value
    if special.chat_template is not None:
        vocab.chat_template = special.chat_template
    generation = _read_json(folder / "generation_config.json") or {}
    for kind in ("bos", "eos", "pad"):
        token_id = generation.get(f"{kind}_token_id")
        if isinstance(token_id, list) and token_id:
            token_id = token_id[0]
        if isinstance(token_id, int) and 0 <= token_id < len(vocab):
            vocab.special_ids.setdefault(kind, token_id)
    for kind in ("bos", "eos", "unk", "pad"):
        if kind not in vocab.special_ids and (token_id := _spm_default(vocab, kind)) is not None:
            vocab.special_ids[kind] = token_id


def _spm_default(vocab: Vocab, kind: str) -> int | None:
    """SentencePiece types mark unk (and LLaMA's <s>, </s> as the first control pieces) when no config says."""
    if vocab.model != "llama":
        return None
    if kind == "unk":
        return next((i for i, t in enumerate(vocab.token_types) if t == _T.UNKNOWN), None)
    texts = {"bos": "<s>", "eos": "</s>"}
    if kind in texts and texts[kind] in vocab.tokens:
        token_id = vocab.tokens.index(texts[kind])
        return token_id if vocab.token_types[token_id] == _T.CONTROL else None
    return None


def _pad_to_config(vocab: Vocab, folder: Path) -> None:
    config = _read_json(folder / "config.json") or {}
    size = config.get("padded_vocab_size") or config.get("vocab_size")
    if not isinstance(size, int):
        return
    if size < len(vocab):
        raise ConversionError(
            f"{folder / 'config.json'}: vocab_size {size} is smaller than the tokenizer's {len(vocab)} tokens"
        )
    _pad(vocab, size)


def _pad(vocab: Vocab, size: int) -> None:
    """Fill ids the tokenizer does not use with unused placeholders, as llama.cpp's converter does."""
    for i in range(len(vocab), size):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.token_types.append(_T.UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-1000.0)


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc})") from None
