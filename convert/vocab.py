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

import re
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

import gguf

from . import spm_proto
from .bpe_pre_hashes import CHECK_TEXT, PRE_TOKENIZER_BY_HASH
from .errors import ConversionError
from .vocab_base import Vocab, add_spm_added_tokens, fit_to_rows, read_json
from .vocab_tiktoken import GLM4_PATTERN, glm_special_tokens, load_tiktoken_vocab
from .vocab_tiktoken import PRE_TOKENIZER as GLM_PRE_TOKENIZER

TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "tokenizer.json")
_T = gguf.TokenType


def load_vocab(folder: str | Path, tokenizer_folder: str | Path | None = None) -> Vocab:
    """The vocabulary of the checkpoint in `folder`, fitted to its config.json's vocab_size (see fit_to_rows).

    `tokenizer_folder` (the base model's tokenizer, for a fine-tune shipped without one) supplies every
    tokenizer file instead of `folder`; the weights' row count still comes from `folder`'s config.json.
    """
    folder = Path(folder)
    tok_folder = Path(tokenizer_folder) if tokenizer_folder is not None else folder
    vocab = _load_tokenizer(tok_folder, asked=tokenizer_folder is not None)
    _fit_to_config(vocab, folder)
    _add_special_tokens(vocab, tok_folder, folder)
    if vocab.pre in (GLM_PRE_TOKENIZER, "glm4"):  # GLM-4 (the glm4 hash is glm-4-9b-hf's tokenizer.json)
        glm_special_tokens(vocab)
    return vocab


def has_tokenizer(folder: str | Path) -> bool:
    """Whether `folder` holds one of the tokenizer files load_vocab reads."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def _load_tokenizer(folder: Path, asked: bool) -> Vocab:
    spm_file, json_file = folder / "tokenizer.model", folder / "tokenizer.json"
    if not spm_file.is_file():
        spm_file = folder / "spiece.model"  # T5's name
    if spm_file.is_file() and _is_tiktoken_ranks(spm_file):
        return load_tiktoken_vocab(spm_file)
    if spm_file.is_file():
        return _load_sentencepiece(spm_file)
    if json_file.is_file():
        return _load_bpe(json_file)
    hint = "" if asked else ": give the base model's tokenizer with --tokenizer-from FOLDER|REPO"
    raise ConversionError(f"{folder}: no tokenizer found (looked for {', '.join(TOKENIZER_FILES)}){hint}")


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
        n_base=len(proto.pieces),
    )
    add_spm_added_tokens(vocab, path.parent)
    return vocab


# --- byte-level BPE (tokenizer.json) --------------------------------------------------------------------------


def _load_bpe(path: Path) -> Vocab:
    from tokenizers import Tokenizer

    data = read_json(path)
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
    base = [i for i in by_id if i not in added]
    vocab = Vocab(
        model="gpt2",
        pre=pre,
        tokens=tokens,
        token_types=types,
        merges=_merges(model.get("merges") or [], path),
        n_base=max(base) + 1 if base else 0,
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


def _add_special_tokens(vocab: Vocab, tok_folder: Path, folder: Path) -> None:
    """Special ids and flags from the tokenizer's files, then the checkpoint's generation_config.json."""
    special = gguf.SpecialVocab(tok_folder, load_merges=False, n_vocab=len(vocab))
    for kind, token_id in special.special_token_ids.items():
        vocab.special_ids.setdefault(kind, token_id)
    for kind, value in special.add_special_token.items():
        if kind in ("bos", "eos", "sep"):
            vocab.add_special[kind] = value
    if special.chat_template is not None:
        vocab.chat_template = special.chat_template
    generation = read_json(folder / "generation_config.json") or {}
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


def _fit_to_config(vocab: Vocab, folder: Path) -> None:
    config = read_json(folder / "config.json") or {}
    size = config.get("padded_vocab_size") or config.get("vocab_size")
    if isinstance(size, int):
        fit_to_rows(vocab, size, str(folder / "config.json"))
