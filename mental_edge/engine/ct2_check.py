"""A CTranslate2 model folder (MentalBART) checked before CTranslate2 loads it, as far as its format allows:
config.json and the vocabulary files read with bounded sizes and parsed; model.bin's header walked (version, spec
name, every variable's name, rank, dimensions, type and byte count, which must equal the dimensions' product times
the type's size and lie inside the file, then the aliases, ending exactly at the end of the file). Not checked:
whether the variables are the ones the spec needs and have the shapes it expects (CTranslate2 refuses a missing
one with its own error), and the weights' values. docs/model-files.md.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from mental_edge.errors import MentalEdgeError

__all__ = ["check_ct2_folder"]

BINARY_VERSIONS = range(1, 7)  # model.bin versions CTranslate2 4.x reads (6 is the current one)
SPECS = ("TransformerSpec",)  # the seq2seq spec BART is converted to (convert/bart_ct2.py)
ITEM_BYTES = (4, 1, 2, 4, 2, 2)  # by type id: float32, int8, int16, int32, float16, bfloat16
MAX_JSON_BYTES = 64 << 20  # config.json and a vocabulary file
MAX_VARIABLES = 1 << 16
MAX_RANK = 8
VOCABULARIES = ("shared_vocabulary.json", "source_vocabulary.json", "target_vocabulary.json")


class _Problem(Exception):
    pass


def check_ct2_folder(path: Path) -> None:
    try:
        _check_json(path / "config.json", dict)
        for name in VOCABULARIES:
            if (path / name).exists():
                _check_vocabulary(path / name)
        _check_model_bin(path / "model.bin")
    except _Problem as exc:
        raise MentalEdgeError(f"{path}: {exc}") from None
    except OSError as exc:
        raise MentalEdgeError(f"{path}: cannot read the model folder ({exc.strerror or exc})") from None


def _check_json(path: Path, kind: type):
    if not path.is_file():
        raise _Problem(f"{path.name} is missing")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise _Problem(f"{path.name} is larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise _Problem(f"{path.name} is not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(value, kind):
        raise _Problem(f"{path.name} is not a JSON {'object' if kind is dict else 'list'}")
    return value


def _check_vocabulary(path: Path) -> None:
    tokens = _check_json(path, list)
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise _Problem(f"{path.name} is not a list of token strings")


class _Walk:
    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size

    def read(self, n: int, what: str) -> bytes:
        if n > self.size - self.fh.tell():
            raise _Problem(f"model.bin: {what} at byte {self.fh.tell()} runs past the end (truncated or damaged)")
        return self.fh.read(n)

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")
        raw = self.read(n, what)
        if not raw.endswith(b"\0"):
            raise _Problem(f"model.bin: {what} at byte {self.fh.tell() - n} is not a terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise _Problem(f"model.bin: {what} is not UTF-8 text") from None

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.fh.tell():
            raise _Problem(f"model.bin: {what} runs past the end of the file (truncated or damaged)")
        self.fh.seek(n, 1)


def _check_model_bin(path: Path) -> None:
    if not path.is_file():
        raise _Problem("model.bin is missing")
    with open(path, "rb") as fh:
        walk = _Walk(fh, path.stat().st_size)
        version = walk.unpack("I", "the version")
        if version not in BINARY_VERSIONS:
            raise _Problem(
                f"model.bin has format version {version} (this CTranslate2 reads {BINARY_VERSIONS.stop - 1})"
            )
        spec = walk.string("the spec name")
        if spec not in SPECS:
            raise _Problem(f"model.bin holds a {spec!r}, not a model this package runs ({', '.join(SPECS)})")
        walk.unpack("I", "the spec revision")
        count = walk.unpack("I", "the variable count")
        if count > MAX_VARIABLES:
            raise _Problem(f"model.bin claims {count} variables (at most {MAX_VARIABLES})")
        for _ in range(count):
            _variable(walk)
        for _ in range(walk.unpack("I", "the alias count")):
            walk.string("an alias")
            walk.string("an alias target")
        if fh.tell() != walk.size:
            raise _Problem(f"model.bin has {walk.size - fh.tell()} bytes after its last entry")


def _variable(walk: _Walk) -> None:
    name = walk.string("a variable name")
    rank = walk.unpack("B", f"the rank of {name}")
    if rank > MAX_RANK:
        raise _Problem(f"model.bin: variable {name} has rank {rank}")
    dims = [walk.unpack("I", f"a dimension of {name}") for _ in range(rank)]
    type_id = walk.unpack("B", f"the type of {name}")
    if type_id >= len(ITEM_BYTES):
        raise _Problem(f"model.bin: variable {name} has an unknown type {type_id}")
    n_bytes = walk.unpack("I", f"the size of {name}")
    count = 1
    for dim in dims:
        count *= dim
    if n_bytes != count * ITEM_BYTES[type_id]:
        raise _Problem(f"model.bin: variable {name} holds {n_bytes} bytes for its shape {dims} ({count} items)")
    walk.skip(n_bytes, f"the data of {name}")
