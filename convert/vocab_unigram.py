"""T5's SentencePiece unigram vocabulary (`spiece.model`) as llama.cpp's `t5` tokenizer wants it.

Besides tokens, scores and types, llama.cpp's unigram tokenizer needs the normalizer of the model file: the
precompiled character map, add_space_prefix and remove_extra_whitespaces. The 100 sentinel tokens
`<extra_id_N>` are not in spiece.model (Hugging Face's tokenizer adds them after the pieces, `<extra_id_0>`
last); their ids come from the tokenizer files when they list them. T5 inputs end in `</s>` (add_eos true) and
have no BOS; eos 1, unk 2 and pad 0 are the pieces typed so in the model file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from . import spm_proto
from .errors import ConversionError
from .vocab_base import Vocab, add_spm_added_tokens, read_json

_T = gguf.TokenType
N_SENTINELS = 100


@dataclass
class UnigramVocab(Vocab):
    """A `Vocab` with the normalizer fields only a unigram model has."""

    remove_extra_whitespaces: bool = True
    precompiled_charsmap: bytes = b""

    def write(self, writer: gguf.GGUFWriter) -> None:
        # llama.cpp's own converter writes these whatever the tokenizer files say: without the trailing </s>
        # a T5 model's greedy output changes completely.
        self.add_special = {"bos": False, "eos": True}
        self.special_ids.pop("bos", None)
        super().write(writer)
        writer.add_remove_extra_whitespaces(self.remove_extra_whitespaces)
        if self.precompiled_charsmap:
            writer.add_precompiled_charsmap(self.precompiled_charsmap)


def load_unigram(path: Path, proto: spm_proto.SentencePieceModel) -> UnigramVocab:
    """The vocabulary of a unigram `spiece.model` (already parsed as `proto`)."""
    if proto.model_type != spm_proto.UNIGRAM:
        raise ConversionError(f"{path}: SentencePiece model type {proto.model_type} is not a unigram model")
    vocab = UnigramVocab(
        model="t5",
        pre="default",
        tokens=list(proto.pieces),
        token_types=list(proto.types),
        scores=list(proto.scores),
        add_space_prefix=proto.add_dummy_prefix,
        remove_extra_whitespaces=proto.remove_extra_whitespaces,
        precompiled_charsmap=proto.precompiled_charsmap,
        n_base=len(proto.pieces),
    )
    folder = path.parent
    for text, token_id in _listed_sentinels(folder).items():
        _place(vocab, token_id, text)
    add_spm_added_tokens(vocab, folder)
    if "<extra_id_0>" not in vocab.tokens:
        _add_default_sentinels(vocab, len(proto.pieces), folder)
    for kind, wanted in (("pad", "<pad>"), ("eos", "</s>"), ("unk", "<unk>")):
        token_id = _typed_piece(vocab, wanted, _T.UNKNOWN if kind == "unk" else _T.CONTROL)
        if token_id is not None:
            vocab.special_ids[kind] = token_id
    return vocab


def _typed_piece(vocab, text: str, kind: int) -> int | None:
    for i, (token, token_type) in enumerate(zip(vocab.tokens, vocab.token_types)):
        if token == text and token_type == kind:
            return i
    return None


def _listed_sentinels(folder: Path) -> dict[str, int]:
    """Sentinels with their ids as tokenizer.json lists them (transformers 5 writes no added_tokens.json)."""
    data = read_json(folder / "tokenizer.json")
    added = (data.get("added_tokens") if isinstance(data, dict) else None) or []
    return {
        t["content"]: int(t["id"])
        for t in added
        if isinstance(t, dict) and str(t.get("content", "")).startswith("<extra_id_")
    }


def _add_default_sentinels(vocab, n_pieces: int, folder: Path) -> None:
    """Hugging Face's T5Tokenizer numbering: `<extra_id_N>` is id n_pieces + extra_ids - 1 - N."""
    config = read_json(folder / "tokenizer_config.json")
    count = config.get("extra_ids", N_SENTINELS) if isinstance(config, dict) else N_SENTINELS
    for n in range(int(count)):
        _place(vocab, n_pieces + int(count) - 1 - n, f"<extra_id_{n}>")


def _place(vocab, token_id: int, text: str) -> None:
    """A sentinel is CONTROL: text typed in a post never turns into one."""
    while len(vocab.tokens) <= token_id:
        i = len(vocab.tokens)
        vocab.tokens.append(f"[PAD{i}]")
        vocab.token_types.append(_T.UNUSED)
        vocab.scores.append(-1000.0)
    vocab.tokens[token_id], vocab.token_types[token_id], vocab.scores[token_id] = text, _T.CONTROL, -1000.0
