"""Read a SentencePiece `tokenizer.model` (a ModelProto) without protobuf: only the fields a GGUF needs.

The wire format is small and stable; decoding it here keeps the piece types the sentencepiece library does not
expose (USER_DEFINED) and avoids a protobuf dependency. Field numbers are those of sentencepiece_model.proto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# SentencePiece.Type; gguf.TokenType uses the same numbers (NORMAL=1 ... BYTE=6).
NORMAL = 1
# TrainerSpec.ModelType
UNIGRAM, BPE = 1, 2


@dataclass
class SentencePieceModel:
    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    model_type: int = UNIGRAM  # the proto's default
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    precompiled_charsmap: bytes = b""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    """Yield (field number, value) for one message; value is an int, or bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, value


def _piece(data: bytes) -> tuple[str, float, int]:
    piece, score, kind = "", 0.0, NORMAL
    for number, value in _fields(data):
        if number == 1:
            piece = value.decode("utf-8")
        elif number == 2:
            score = struct.unpack("<f", value)[0]
        elif number == 3:
            kind = value
    return piece, score, kind


def parse_model(data: bytes) -> SentencePieceModel:
    """Decode a serialized ModelProto; raises ValueError on bytes that are not one."""
    model = SentencePieceModel()
    for number, value in _fields(data):
        if number == 1:
            piece, score, kind = _piece(value)
            model.pieces.append(piece)
            model.scores.append(score)
            model.types.append(kind)
        elif number == 2:
            for n, v in _fields(value):
                if n == 3:
                    model.model_type = v
        elif number == 3:
            for n, v in _fields(value):
                if n == 2:
                    model.precompiled_charsmap = v
                elif n == 3:
                    model.add_dummy_prefix = bool(v)
                elif n == 4:
                    model.remove_extra_whitespaces = bool(v)
    if not model.pieces:
        raise ValueError("no pieces")
    return model
