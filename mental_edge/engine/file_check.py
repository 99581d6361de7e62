"""The check a model file passes before any backend opens it (docs/model-files.md).

A GGUF file: its architecture must be one the package runs (a family with a `file_shape`, families/) or one the
user named on purpose; its header must read whole within bounds (gguf_header.py); its hyperparameters must lie in
sane ranges and agree with its tensors' shapes; its vocabulary arrays must have the element types and lengths
llama.cpp reads. A CTranslate2 folder (ct2_check.py): its config, vocabulary and model.bin's variable table.
Every problem is one line naming the file. Nothing here reads tensor data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path

from gguf import GGMLQuantizationType, GGUFValueType

from mental_edge.engine.gguf_header import ArrayValue, FileProblem, Header, read_header
from mental_edge.engine.sizing import MAX_TRAIN_CONTEXT, MIN_TRAIN_CONTEXT
from mental_edge.errors import MentalEdgeError

__all__ = ["MAX_BLOCKS", "builtin_architectures", "check_gguf_file", "check_model_file", "header_of"]

MAX_BLOCKS = 512  # llama.cpp's LLAMA_MAX_LAYERS: its per-layer arrays are this long
MAX_HEADS = 4096
MAX_HEAD_DIM = 4096
MAX_EXPERTS = 512  # llama.cpp's LLAMA_MAX_EXPERTS
MAX_BUCKETS = 4096
TOKEN_TYPES = range(0, 7)  # llama.cpp's llama_token_type: undefined, normal, unknown, control, user, unused, byte
NO_TOKEN = (-1, 0xFFFFFFFF)  # a token id key that names no token
NOT_WEIGHTS = frozenset(GGMLQuantizationType[name] for name in ("I8", "I16", "I32", "I64", "F64", "Q8_1", "Q8_K"))
_BLOCK = re.compile(r"(\d+)\.")


def builtin_architectures() -> tuple[str, ...]:
    """The GGUF architectures the package runs without being asked: the families with a file shape."""
    from mental_edge.families import FAMILIES

    return tuple(name for name, family in FAMILIES.items() if family.file_shape is not None)


def check_model_file(path: Path, allow_architectures: Collection[str] = ()) -> str | None:
    """The GGUF file's architecture once it passes the check, None for a CTranslate2 folder that passes its own;
    a MentalEdgeError naming the file otherwise."""
    if path.is_dir():
        from mental_edge.engine.ct2_check import check_ct2_folder

        check_ct2_folder(path)
        return None
    return check_gguf_file(path, allow_architectures).values["general.architecture"]


def check_gguf_file(path: Path, allow_architectures: Collection[str] = ()) -> Header:
    """Read and check a GGUF file's header (allow_architectures: the ones named beyond the built-in families)."""
    header = header_of(path)
    try:
        _check(header, set(allow_architectures))
    except FileProblem as exc:
        raise MentalEdgeError(f"{path}: {exc}") from None
    return header


def header_of(path: Path) -> Header:
    """The file's header by the bounded reader (gguf_header.py), unchecked; a damaged or unreadable one is one
    line naming the file."""
    try:
        return read_header(path)
    except FileProblem as exc:
        raise MentalEdgeError(f"{path}: {exc}") from None
    except OSError as exc:
        raise MentalEdgeError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None


def _check(header: Header, allowed: set[str]) -> None:
    from mental_edge.families import FAMILIES

    arch = header.values.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise FileProblem("no general.architecture string: not a model file")
    family = FAMILIES.get(arch)
    shape = family.file_shape if family else None
    if shape is None and arch not in allowed:
        runs = ", ".join(builtin_architectures())
        raise FileProblem(
            f"architecture '{arch}' is not one this package runs ({runs}); to run it on purpose, name it with "
            f"--allow-architecture {arch} (or MENTAL_EDGE_ALLOW_ARCHITECTURES={arch})"
        )
    hp = _Hyper(header, arch)  # an architecture named by the user: the generic rules (block_count, the width)
    blocks = {"block_count": "blk."} if shape is None else shape.blocks
    for key, prefix in blocks.items():
        hp.blocks(key, prefix, required=shape is not None or key in hp.keys)
    for key in shape.required if shape else ():
        hp.need(key)
    for key, (tensor, dim) in (shape.dims if shape else {"embedding_length": ("token_embd.weight", 0)}).items():
        hp.equals_dim(key, tensor, dim)
    hp.ranges(next(iter(blocks.values())))
    _check_tensor_types(header)
    _check_vocabulary(header, shape.tokenizers if shape else None)
    hp.token_id("decoder_start_token_id")


class _Hyper:
    """The `<arch>.` hyperparameters of one header, checked one rule at a time."""

    def __init__(self, header: Header, arch: str):
        self.header, self.arch = header, arch
        self.keys = {k[len(arch) + 1 :] for k in header.values if k.startswith(arch + ".")}

    def get(self, key: str):
        full = f"{self.arch}.{key}"
        if full not in self.header.values:
            return None
        value = self.header.values[full]
        if isinstance(value, ArrayValue) or isinstance(value, (str, bool)):
            raise FileProblem(f"{full} is not a single number")
        return value

    def need(self, key: str) -> None:
        if self.get(key) is None:
            raise FileProblem(f"{self.arch}.{key} is missing")

    def whole(self, key: str, low: int, high: int, required: bool = False) -> int | None:
        value = self.get(key)
        if value is None:
            if required:
                raise FileProblem(f"{self.arch}.{key} is missing")
            return None
        if not isinstance(value, int) or not low <= value <= high:
            raise FileProblem(f"{self.arch}.{key} is {value} (expected {low} to {high})")
        return value

    def blocks(self, key: str, prefix: str, required: bool) -> None:
        """The block count: in range, and equal to the blocks `prefix` numbers 0..n-1 among the tensors."""
        count = self.whole(key, 1, MAX_BLOCKS, required)
        if count is None:
            return
        found = set()
        for name in self.header.tensors:
            if name.startswith(prefix) and (m := _BLOCK.match(name, len(prefix))):
                found.add(int(m.group(1)))
        if found != set(range(count)):
            held = f"{len(found)} ({prefix}0 to {prefix}{max(found)})" if found else "none"
            raise FileProblem(f"{self.arch}.{key} is {count} but the file holds blocks: {held}")

    def equals_dim(self, key: str, tensor: str, dim: int) -> None:
        value = self.get(key)
        info = self.header.tensors.get(tensor)
        if value is None or info is None:
            return
        actual = info.dims[dim] if dim < len(info.dims) else 1
        if value != actual:
            raise FileProblem(f"{self.arch}.{key} is {value} but tensor {tensor} has {actual}")

    def ranges(self, prefix: str) -> None:
        """The numbers llama.cpp sizes or divides by, in range and consistent with each other and the tensors."""
        self.whole("context_length", MIN_TRAIN_CONTEXT, MAX_TRAIN_CONTEXT)
        heads = self.whole("attention.head_count", 1, MAX_HEADS)
        kv_heads = self.whole("attention.head_count_kv", 1, heads or MAX_HEADS)
        if heads and kv_heads and heads % kv_heads:
            raise FileProblem(f"{self.arch}.attention.head_count {heads} is not a multiple of head_count_kv {kv_heads}")
        width = self.whole("embedding_length", 1, 1 << 20)
        self.whole("feed_forward_length", 1, 1 << 22)
        key_dim = self.whole("attention.key_length", 1, MAX_HEAD_DIM)
        self.whole("attention.value_length", 1, MAX_HEAD_DIM)
        if key_dim is None and heads and width:
            if width % heads:
                raise FileProblem(f"{self.arch}.embedding_length {width} is not a multiple of head_count {heads}")
            key_dim = width // heads
        rope = self.whole("rope.dimension_count", 2, key_dim or MAX_HEAD_DIM)
        if rope is not None and rope % 2:
            raise FileProblem(f"{self.arch}.rope.dimension_count {rope} is odd (rope turns pairs of dimensions)")
        self.whole("attention.relative_buckets_count", 1, MAX_BUCKETS)
        experts = self.whole("expert_count", 0, MAX_EXPERTS) or 0
        self.whole("expert_used_count", 0, experts)
        for key in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"):
            self.real(key, 0.0, 1.0)
        self.real("rope.freq_base", 0.0, math.inf)
        self.real("rope.freq_scale", 0.0, math.inf)
        if heads and key_dim:
            self.projection(f"{prefix}0.attn_q.weight", heads * key_dim, "head_count x key length")
            self.projection(f"{prefix}0.attn_k.weight", (kv_heads or heads) * key_dim, "head_count_kv x key length")

    def real(self, key: str, low: float, high: float) -> None:
        value = self.get(key)
        if value is not None and not (low < value < high):
            raise FileProblem(f"{self.arch}.{key} is {value} (expected above {low} and below {high})")

    def projection(self, tensor: str, rows: int, what: str) -> None:
        info = self.header.tensors.get(tensor)
        if info is not None and len(info.dims) > 1 and info.dims[1] != rows:
            raise FileProblem(f"tensor {tensor} has {info.dims[1]} outputs but {what} makes {rows}")

    def token_id(self, key: str) -> None:
        value = self.get(key)
        n_vocab = _vocab_size(self.header)
        if value is not None and value not in NO_TOKEN and not 0 <= value < n_vocab:
            raise FileProblem(f"{self.arch}.{key} {value} is not a token of the {n_vocab} in the vocabulary")


def _check_tensor_types(header: Header) -> None:
    """Types llama.cpp computes with: a 1-D tensor (a norm, a bias) is F32 (every converter writes them so; a
    quantized one aborts the process at its first use), and no weight is of a type ggml only uses inside its kernels
    (integers, F64, Q8_1, Q8_K)."""
    for info in header.tensors.values():
        if len(info.dims) == 1 and info.type != GGMLQuantizationType.F32:
            raise FileProblem(f"tensor {info.name} is 1-D but {info.type.name} (llama.cpp needs F32)")
        if info.type in NOT_WEIGHTS:
            raise FileProblem(f"tensor {info.name} is {info.type.name}, not a weight type llama.cpp computes with")


def _vocab_size(header: Header) -> int:
    tokens = header.values.get("tokenizer.ggml.tokens")
    return tokens.count if isinstance(tokens, ArrayValue) else 0


def _check_vocabulary(header: Header, tokenizers: tuple[str, ...] | None) -> None:
    """The arrays llama.cpp's vocabulary reads: element types, lengths, token types, special ids, byte tokens."""
    values = header.values
    model = values.get("tokenizer.ggml.model")
    if tokenizers is not None and model not in tokenizers:
        raise FileProblem(f"tokenizer.ggml.model is {model!r} (this architecture's files use {', '.join(tokenizers)})")
    tokens = _array(values, "tokenizer.ggml.tokens", GGUFValueType.STRING, None)
    if tokens is None:
        if tokenizers is None:
            return
        raise FileProblem("tokenizer.ggml.tokens is missing")
    n_vocab = tokens.count
    if n_vocab < 1:
        raise FileProblem("tokenizer.ggml.tokens is empty")
    embd = header.tensors.get("token_embd.weight")
    if embd is not None and (len(embd.dims) < 2 or embd.dims[1] != n_vocab):
        rows = embd.dims[1] if len(embd.dims) > 1 else 1
        raise FileProblem(f"the vocabulary has {n_vocab} tokens but token_embd.weight has {rows} rows")
    types = _array(values, "tokenizer.ggml.token_type", GGUFValueType.INT32, n_vocab)
    if types is not None and not (types.items.min() in TOKEN_TYPES and types.items.max() in TOKEN_TYPES):
        raise FileProblem(f"tokenizer.ggml.token_type holds a type outside {TOKEN_TYPES.start}-{TOKEN_TYPES.stop - 1}")
    scores = _array(values, "tokenizer.ggml.scores", GGUFValueType.FLOAT32, n_vocab)
    if scores is not None and scores.items.size and (scores.items != scores.items).any():
        raise FileProblem("tokenizer.ggml.scores holds NaN")
    _array(values, "tokenizer.ggml.merges", GGUFValueType.STRING, None)
    _array(values, "tokenizer.ggml.precompiled_charsmap", GGUFValueType.UINT8, None)
    for key, value in values.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            if isinstance(value, (ArrayValue, str, bool, float)) or (
                value not in NO_TOKEN and not 0 <= value < n_vocab
            ):
                raise FileProblem(f"{key} {value!r} is not a token of the {n_vocab} in the vocabulary")
    _check_tokens(tokens.items, model)


def _array(values: dict, key: str, item_type: GGUFValueType, count: int | None) -> ArrayValue | None:
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, ArrayValue) or value.item_type != item_type:
        raise FileProblem(f"{key} is not an array of {item_type.name.lower()}")
    if count is not None and value.count != count:
        raise FileProblem(f"{key} has {value.count} items for {count} tokens")
    return value


def _check_tokens(tokens: list[bytes], model) -> None:
    """Token texts are UTF-8 and unique (llama.cpp asserts each text maps to one token), and a SentencePiece
    vocabulary holds a token for every byte: llama.cpp falls back on `<0xXX>` (or the byte itself) with no fallback
    of its own while tokenizing, and a missing one ends the process. (Byte-level BPE looks its bytes up softly:
    SmolLM2 lacks some control bytes.)"""
    try:  # one decode: a newline between tokens ends any character a token leaves unfinished
        b"\n".join(tokens).decode("utf-8")
    except UnicodeDecodeError:
        for i, token in enumerate(tokens):
            try:
                token.decode("utf-8")
            except UnicodeDecodeError:
                raise FileProblem(f"token {i} of tokenizer.ggml.tokens is not UTF-8 text") from None
    held = {token or f"[EMPTY_{i}]".encode() for i, token in enumerate(tokens)}  # llama.cpp names empty ones so
    if len(held) != len(tokens):
        seen: dict[bytes, int] = {}
        for i, token in enumerate(tokens):
            text = token or f"[EMPTY_{i}]".encode()
            if text in seen:
                raise FileProblem(f"token {i} of tokenizer.ggml.tokens repeats token {seen[text]}'s text {text[:40]!r}")
            seen[text] = i
    if model == "llama":
        missing = [b for b in range(256) if f"<0x{b:02X}>".encode() not in held and bytes([b]) not in held]
        if missing:
            raise FileProblem(f"the vocabulary lacks {len(missing)} of its 256 byte tokens (<0x{missing[0]:02X}>...)")
