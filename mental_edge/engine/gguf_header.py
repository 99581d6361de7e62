"""A GGUF file's header read in pure Python with bounded reads: the key/values and the tensor infos, never the
tensor data, and never an allocation sized by a number in the file before that number is checked against the
limits below and against the bytes the file still holds.

`read_header(path)` gives a `Header` or raises `FileProblem` (one line, the path added by the caller). The limits
are far above what any real model file needs (docs/model-files.md) and keep a hostile file from making this
reader, or llama.cpp after it, allocate or loop on a number it wrote.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from mental_edge.errors import MentalEdgeError

__all__ = ["ArrayValue", "FileProblem", "Header", "TensorInfo", "read_header"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what llama.cpp reads (version 1 had 32-bit counts)
MAX_HEADER_BYTES = 256 << 20  # key/values and tensor infos together (a 256k-token vocabulary takes about 10 MiB)
MAX_KEYS = 1 << 16
MAX_TENSORS = 1 << 16  # a 70B file has about 720
MAX_KEY_BYTES = 1 << 10
MAX_STRING_BYTES = 16 << 20  # one string value (a chat template is a few KiB)
MAX_ARRAY_ITEMS = 1 << 22  # one array (a vocabulary has 30k-260k tokens)
MAX_NAME_BYTES = 63  # a tensor's name (ggml's GGML_MAX_NAME is 64 with the NUL)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 16
DEFAULT_ALIGNMENT = 32
INT64_MAX = (1 << 63) - 1
CHUNK = 1 << 20
KEPT_STRINGS = frozenset({"tokenizer.ggml.tokens"})  # string arrays whose items are kept (the others are skipped)

_SCALARS = {  # value type -> struct format
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<B",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class FileProblem(MentalEdgeError):
    """What is wrong with a model file, in a few words (the caller puts the path in front)."""


@dataclass(frozen=True)
class ArrayValue:
    """An array key's element type and length; `items` holds the elements of a numeric array (numpy) or a string
    array's strings as bytes."""

    item_type: GGUFValueType
    count: int
    items: object  # None for a string array whose items were skipped


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length
    type: GGMLQuantizationType
    offset: int  # from the start of the data section
    n_bytes: int


@dataclass
class Header:
    version: int
    values: dict[str, object] = field(default_factory=dict)  # key -> int, float, bool, str or ArrayValue
    types: dict[str, GGUFValueType] = field(default_factory=dict)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    alignment: int = DEFAULT_ALIGNMENT
    data_start: int = 0
    file_size: int = 0


class _Bytes:
    """The file read forward in chunks; every read is checked against the file's size first."""

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size
        self.buf = b""
        self.pos = 0  # in buf
        self.base = 0  # file offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def ensure(self, n: int, what: str) -> None:
        """n bytes ready at `pos`, or a FileProblem when the file (or the header limit) ends first."""
        if self.pos + n <= len(self.buf):
            return
        if n > self.size - self.offset:
            raise FileProblem(f"{what} at byte {self.offset} runs past the end of the file (truncated or damaged)")
        if self.offset + n > MAX_HEADER_BYTES:
            raise FileProblem(f"the header is larger than {MAX_HEADER_BYTES >> 20} MiB at {what}")
        rest = self.buf[self.pos :]
        self.base += self.pos
        self.buf = rest + self.fh.read(max(CHUNK, n - len(rest)))
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        self.ensure(n, what)
        self.pos += n
        return self.buf[self.pos - n : self.pos]

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> bytes:
        n = self.unpack("<Q", f"the length of {what}")
        if n > limit:
            raise FileProblem(f"{what} claims {n} bytes (at most {limit} allowed)")
        return self.take(n, what)

    def strings(self, count: int, what: str, keep: bool) -> list[bytes] | None:
        """A string array's items (kept only when asked: a vocabulary's tokens), each length checked. The loop
        works on locals and refills through `ensure` only at the buffer's end (a vocabulary has 10^5 items)."""
        items: list[bytes] | None = [] if keep else None
        length = struct.Struct("<Q").unpack_from
        buf, pos = self.buf, self.pos
        size = len(buf)
        for i in range(count):
            if pos + 8 > size:
                buf, pos = self._refill(pos, 8, f"item {i} of {what}")
                size = len(buf)
            (n,) = length(buf, pos)
            pos += 8
            if n > MAX_STRING_BYTES:
                raise FileProblem(f"item {i} of {what} claims {n} bytes (at most {MAX_STRING_BYTES} allowed)")
            if pos + n > size:
                buf, pos = self._refill(pos, n, f"item {i} of {what}")
                size = len(buf)
            if items is not None:
                items.append(buf[pos : pos + n])
            pos += n
        self.pos = pos
        return items

    def _refill(self, pos: int, n: int, what: str) -> tuple[bytes, int]:
        self.pos = pos
        self.ensure(n, what)
        return self.buf, self.pos


def read_header(path: Path) -> Header:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        src = _Bytes(fh, size)
        if bytes(src.take(4, "the magic bytes")) != MAGIC:
            raise FileProblem("not a GGUF model file (bad magic bytes)")
        header = Header(version=src.unpack("<I", "the version"), file_size=size)
        if header.version not in VERSIONS:
            raise FileProblem(f"GGUF version {header.version} is not one llama.cpp reads ({VERSIONS})")
        n_tensors = _count(src, "tensor count", MAX_TENSORS)
        n_keys = _count(src, "key/value count", MAX_KEYS)
        for _ in range(n_keys):
            _read_key(src, header)
        header.alignment = _alignment(header)
        for _ in range(n_tensors):
            _read_tensor(src, header)
        header.data_start = -(-src.offset // header.alignment) * header.alignment
    _check_data_regions(header)
    return header


def _count(src: _Bytes, what: str, limit: int) -> int:
    n = src.unpack("<Q", f"the {what}")
    if n > limit:
        raise FileProblem(f"the {what} is {n} (at most {limit} allowed)")
    return n


def _read_key(src: _Bytes, header: Header) -> None:
    raw = src.string("a key", MAX_KEY_BYTES)
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FileProblem(f"a key at byte {src.offset} is not UTF-8 text") from None
    if key in header.values:
        raise FileProblem(f"key {key} appears twice")
    value_type = _value_type(src.unpack("<I", f"the type of {key}"), key)
    if value_type == GGUFValueType.ARRAY:
        header.values[key] = _read_array(src, key)
    else:
        header.values[key] = _read_scalar(src, value_type, key)
    header.types[key] = value_type


def _value_type(code: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(code)
    except ValueError:
        raise FileProblem(f"key {key} has an unknown value type {code}") from None


def _read_scalar(src: _Bytes, value_type: GGUFValueType, key: str):
    if value_type == GGUFValueType.STRING:
        raw = src.string(f"the value of {key}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FileProblem(f"the value of {key} is not UTF-8 text") from None
    value = src.unpack(_SCALARS[value_type], f"the value of {key}")
    if value_type == GGUFValueType.BOOL:
        if value > 1:
            raise FileProblem(f"the value of {key} is {value}, not a boolean")
        return bool(value)
    return value


def _read_array(src: _Bytes, key: str) -> ArrayValue:
    item_type = _value_type(src.unpack("<I", f"the element type of {key}"), key)
    if item_type == GGUFValueType.ARRAY:
        raise FileProblem(f"key {key} is an array of arrays (llama.cpp reads none)")
    count = _count(src, f"length of {key}", MAX_ARRAY_ITEMS)
    if item_type == GGUFValueType.STRING:
        return ArrayValue(item_type, count, src.strings(count, key, keep=key in KEPT_STRINGS))
    fmt = _SCALARS[item_type]
    data = src.take(count * struct.calcsize(fmt), f"the items of {key}")
    return ArrayValue(item_type, count, np.frombuffer(data, dtype=np.dtype(fmt)))


def _alignment(header: Header) -> int:
    value = header.values.get("general.alignment", DEFAULT_ALIGNMENT)
    if header.types.get("general.alignment", GGUFValueType.UINT32) != GGUFValueType.UINT32:
        raise FileProblem("general.alignment is not a uint32")
    if not 1 <= value <= MAX_ALIGNMENT or value & (value - 1):
        raise FileProblem(f"general.alignment {value} is not a power of two up to {MAX_ALIGNMENT}")
    return value


def _read_tensor(src: _Bytes, header: Header) -> None:
    raw = src.string("a tensor name", MAX_NAME_BYTES)
    name = raw.decode("utf-8", "replace")
    if name in header.tensors:
        raise FileProblem(f"tensor {name} appears twice")
    n_dims = src.unpack("<I", f"the dimension count of tensor {name}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise FileProblem(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
    dims = tuple(src.unpack("<q", f"a dimension of tensor {name}") for _ in range(n_dims))
    code = src.unpack("<I", f"the type of tensor {name}")
    offset = src.unpack("<Q", f"the offset of tensor {name}")
    header.tensors[name] = _tensor(name, dims, code, offset, header.alignment)


def _tensor(name: str, dims: tuple[int, ...], code: int, offset: int, alignment: int) -> TensorInfo:
    try:
        kind = GGMLQuantizationType(code)
        block, type_size = GGML_QUANT_SIZES[kind]
    except (ValueError, KeyError):
        raise FileProblem(f"tensor {name} has an unknown type {code}") from None
    count = 1
    for dim in dims:
        if dim < 1:
            raise FileProblem(f"tensor {name} has a dimension of {dim}")
        if count > INT64_MAX // dim:
            raise FileProblem(f"tensor {name}'s dimensions {list(dims)} overflow its element count")
        count *= dim
    if dims[0] % block:
        raise FileProblem(f"tensor {name}'s rows of {dims[0]} are not whole {kind.name} blocks of {block}")
    if offset % alignment:
        raise FileProblem(f"tensor {name}'s offset {offset} is not aligned to {alignment}")
    return TensorInfo(name, dims, kind, offset, count // block * type_size)


def _check_data_regions(header: Header) -> None:
    """Every tensor's bytes inside the file, none overlapping another's."""
    room = header.file_size - header.data_start
    end, last = 0, None
    for info in sorted(header.tensors.values(), key=lambda t: t.offset):
        if info.offset < end:
            raise FileProblem(f"tensor {info.name}'s data overlaps tensor {last}'s")
        end = info.offset + info.n_bytes
        if end > room:
            raise FileProblem(
                f"tensor {info.name}'s data ends at byte {header.data_start + end}, past the file's "
                f"{header.file_size} bytes (truncated or damaged)"
            )
        last = info.name
