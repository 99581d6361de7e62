"""What every vocabulary kind shares: the `Vocab` record, JSON side files, added tokens, and fitting the
token list to the weights.

The kinds (vocab.py's SentencePiece and BPE, vocab_tiktoken, vocab_unigram) import this module and nothing
of each other, so that vocab.py alone picks between them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from .errors import ConversionError

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
    n_base: int | None = None  # ids the tokenizer model itself defines; later ones are added tokens
    notes: list[str] = field(default_factory=list)  # one line each: what was changed to fit the weights

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


def read_json(path: Path):
    """A tokenizer side file's JSON, None when the file is absent; an unreadable one is one line naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc})") from None


def add_spm_added_tokens(vocab: Vocab, folder: Path) -> None:
    """added_tokens.json and tokenizer_config's added_tokens_decoder, as llama.cpp's converter reads them."""
    added = read_json(folder / "added_tokens.json") or {}
    if not isinstance(added, dict):
        raise ConversionError(f"{folder / 'added_tokens.json'}: expected a JSON object of token: id")
    for text, token_id in sorted(added.items(), key=lambda kv: _token_id(kv[1], folder / "added_tokens.json")):
        set_token(vocab, _token_id(token_id, folder / "added_tokens.json"), text, _T.USER_DEFINED)
    config_path = folder / "tokenizer_config.json"
    decoder = (read_json(config_path) or {}).get("added_tokens_decoder") or {}
    for key, entry in decoder.items():
        token_id = _token_id(key, config_path)
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise ConversionError(f"{config_path}: added_tokens_decoder entry {key!r} is unreadable")
        if (
            token_id < len(vocab)
            and vocab.tokens[token_id] == entry["content"]
            and vocab.token_types[token_id] in (_T.CONTROL, _T.UNKNOWN, _T.BYTE)
        ):
            continue  # the proto already types it
        kind = _T.CONTROL if entry.get("special") else _T.USER_DEFINED
        set_token(vocab, token_id, entry["content"], kind)


def _token_id(value, path: Path) -> int:
    try:
        token_id = int(value)
    except (TypeError, ValueError):
        raise ConversionError(f"{path}: token id {value!r} is not a number") from None
    if token_id < 0:
        raise ConversionError(f"{path}: token id {token_id} is negative")
    return token_id


def set_token(vocab: Vocab, token_id: int, text: str, kind: int) -> None:
    """Put `text` at `token_id` (scored -1000 like every added token), padding the ids between."""
    if token_id > len(vocab):
        pad_vocab(vocab, token_id)
    if token_id == len(vocab):
        vocab.tokens.append(text)
        vocab.token_types.append(kind)
        vocab.scores.append(-1000.0)
    else:
        vocab.tokens[token_id], vocab.token_types[token_id], vocab.scores[token_id] = text, kind, -1000.0


def pad_vocab(vocab: Vocab, size: int) -> None:
    """Fill ids the tokenizer does not use with unused placeholders, as llama.cpp's converter does."""
    for i in range(len(vocab), size):
        vocab.tokens.append(f"[PAD{i}]")
        vocab.token_types.append(_T.UNUSED)
        if vocab.scores is not None:
            vocab.scores.append(-1000.0)


def fit_to_rows(vocab: Vocab, rows: int, where: str) -> None:
    """Make the token list exactly `rows` long, the rows of the embedding (config.json's vocab_size).

    LLaMA-2 fine-tunes often add a pad token without resizing the embedding (32,001 tokens over 32,000 rows),
    or pad the embedding past the tokenizer; llama.cpp's converter stops at either with "wrong shape". Here
    trailing *added* tokens no row backs are dropped, and missing ids become placeholders as its --pad-vocab
    does; each says so in `vocab.notes`. A tokenizer whose own model is larger than the rows is refused.
    """
    base = len(vocab) if vocab.n_base is None else min(vocab.n_base, len(vocab))
    if rows < base:
        raise ConversionError(f"{where}: vocab_size {rows} is smaller than the tokenizer's {base} tokens")
    if rows < len(vocab):
        dropped = ", ".join(f"{vocab.tokens[i]!r} (id {i})" for i in range(rows, len(vocab)))
        vocab.notes.append(
            f"tokenizer: dropped {len(vocab) - rows} added token(s) that no weight row backs "
            f"({where}: vocab_size {rows}): {dropped}"
        )
        del vocab.tokens[rows:], vocab.token_types[rows:]
        if vocab.scores is not None:
            del vocab.scores[rows:]
        vocab.special_ids = {kind: i for kind, i in vocab.special_ids.items() if i < rows}
    elif rows > len(vocab):
        vocab.notes.append(
            f"tokenizer: {len(vocab)} tokens padded to {where}'s vocab_size {rows} with "
            f"{rows - len(vocab)} placeholder token(s) [PAD{len(vocab)}]... (as llama.cpp's --pad-vocab)"
        )
        pad_vocab(vocab, rows)
