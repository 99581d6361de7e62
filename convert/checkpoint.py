"""A Hugging Face checkpoint folder read lazily: config.json, then tensors one at a time.

Weights come from `*.safetensors` (sharded through `model.safetensors.index.json`) or, failing that,
from `pytorch_model*.bin` (sharded through `pytorch_model.bin.index.json`, read by torch_bin without
executing the pickle). Every shard is checked for truncation when the checkpoint is opened, so a
broken download fails before any output is written. Python files shipped beside the weights are
never imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import torch_bin
from .errors import ConversionError

_SAFETENSORS_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
FLOAT_DTYPES = ("F32", "F16", "BF16")


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values stored as uint16 -> float32 (exact: bf16 is the top half of an f32)."""
    wide = bits.astype(np.uint32)
    wide <<= 16  # in place: one float32-sized buffer, not two
    return wide.view(np.float32)


@dataclass
class LazyTensor:
    """One tensor of the checkpoint, not yet read. `load()` reads it: float32, or float16 for f16 sources."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name: F32, F16, BF16, ...
    file: Path
    _read: Callable[[], np.ndarray] = field(repr=False)

    def load(self) -> np.ndarray:
        if self.dtype not in FLOAT_DTYPES:
            raise ConversionError(
                f"{self.file.name}: tensor {self.name} has dtype {self.dtype}, "
                f"expected one of {', '.join(FLOAT_DTYPES)}"
            )
        raw = self._read()
        if self.dtype == "BF16":
            raw = bf16_to_f32(raw)
        return raw.reshape(self.shape)


def _safetensors_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as fp:
        head = fp.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path.name}: truncated safetensors file (no header)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ConversionError(f"{path.name}: truncated safetensors file (header runs past the end)")
        try:
            header = json.loads(fp.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConversionError(f"{path.name}: unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path.name}: unreadable safetensors header")
    return header, 8 + n


def _safetensors_tensors(path: Path) -> list[LazyTensor]:
    header, start = _safetensors_header(path)
    size = path.stat().st_size
    tensors = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(d) for d in meta["shape"]), meta["data_offsets"]
            np_dtype = np.dtype(_SAFETENSORS_DTYPES[dtype])
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path.name}: tensor {name} has an unreadable or unsupported entry") from None
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * np_dtype.itemsize:
            raise ConversionError(f"{path.name}: tensor {name}: byte range does not match its shape {list(shape)}")
        if start + end > size:
            raise ConversionError(
                f"{path.name}: truncated (tensor {name} ends at byte {start + end}, the file has {size})"
            )
        read = _file_reader(path, np_dtype, count, start + begin)
        tensors.append(LazyTensor(name, shape, dtype, path, read))
    return tensors


def _file_reader(path: Path, np_dtype: np.dtype, count: int, offset: int) -> Callable[[], np.ndarray]:
    # A plain read rather than a long-lived memory map: pages of a map stay in the resident set
    # while it is open, a read buffer is freed with the array.
    return lambda: np.fromfile(path, dtype=np_dtype, count=count, offset=offset)


def _bin_tensors(path: Path) -> list[LazyTensor]:
    records = torch_bin.read_index(path)
    torch_bin.check_sizes(path, records)
    return [
        LazyTensor(name, rec.shape, rec.dtype, path, (lambda rec=rec: torch_bin.load(path, rec)))
        for name, rec in records.items()
    ]


def _indexed_files(folder: Path, index_name: str) -> list[Path] | None:
    index = folder / index_name
    if not index.exists():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ConversionError(f"{index_name}: unreadable index (expected a weight_map)") from None
    for name in names:
        if Path(name).name != name or not (folder / name).is_file():
            raise ConversionError(f"{index_name}: lists the shard {name}, which is not in {folder}")
    return [folder / name for name in names]


def _weight_files(folder: Path) -> tuple[list[Path], Callable[[Path], list[LazyTensor]]]:
    files = _indexed_files(folder, "model.safetensors.index.json")
    if files is None:
        files = sorted(folder.glob("*.safetensors"))
    if files:
        return files, _safetensors_tensors
    files = _indexed_files(folder, "pytorch_model.bin.index.json")
    if files is None:
        files = sorted(folder.glob("pytorch_model*.bin"))
    if files:
        return files, _bin_tensors
    raise ConversionError(f"{folder}: no weights found (expected *.safetensors or pytorch_model*.bin)")


@dataclass
class Checkpoint:
    folder: Path
    config: dict
    _tensors: dict[str, LazyTensor]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Checkpoint:
        folder = Path(folder)
        if not folder.is_dir():
            raise ConversionError(f"{folder}: not a checkpoint folder")
        config = read_config(folder / "config.json")
        files, reader = _weight_files(folder)
        tensors: dict[str, LazyTensor] = {}
        for path in files:
            for tensor in reader(path):
                if tensor.name in tensors:
                    raise ConversionError(
                        f"{path.name}: tensor {tensor.name} is also in {tensors[tensor.name].file.name}"
                    )
                tensors[tensor.name] = tensor
        return cls(folder, config, tensors)

    @property
    def architecture(self) -> str | None:
        archs = self.config.get("architectures") or [None]
        return archs[0]

    def names(self) -> list[str]:
        return list(self._tensors)

    def get(self, name: str) -> LazyTensor | None:
        return self._tensors.get(name)

    def tensors(self) -> Iterator[tuple[str, LazyTensor]]:
        yield from self._tensors.items()

    def with_state_dict(self, path: str | os.PathLike, tied: tuple[str, ...] = ()) -> Checkpoint:
        """This checkpoint with the tensors of a torch state-dict file (`torch.save(model.state_dict())`, such as
        BARTScore's `bart_score.pth`) in place of its own, read without running the pickle. Every tensor there must
        be one of the checkpoint's (or one of `tied`, the names a tied embedding goes by), with the same shape;
        when it holds the first of `tied`, the checkpoint's copies under the other names give way to it."""
        path = Path(path)
        if not path.is_file():
            raise ConversionError(f"{path}: no such state-dict file")
        overrides = {t.name: t for t in _bin_tensors(path)}
        for name, tensor in overrides.items():
            mine = self._tensors.get(name)
            if mine is None and name not in tied:
                raise ConversionError(f"{path.name}: tensor {name} is not in the checkpoint {self.folder.name}")
            if mine is not None and tuple(mine.shape) != tuple(tensor.shape):
                raise ConversionError(
                    f"{path.name}: tensor {name} has shape {list(tensor.shape)}, the checkpoint's {list(mine.shape)}"
                )
        tensors = dict(self._tensors)
        if tied and tied[0] in overrides:
            for name in tied[1:]:
                if name not in overrides:
                    tensors.pop(name, None)
        tensors.update(overrides)
        return Checkpoint(self.folder, self.config, tensors)


def read_config(path: Path) -> dict:
    """A checkpoint's config.json as a dict; missing, unreadable or not an object is one line naming it."""
    if not path.is_file():
        raise ConversionError(f"{path}: missing (every checkpoint needs its config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path.name}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path.name}: expected a JSON object")
    return config


def config_field(config: dict, *keys: str):
    """The first of `keys` that config.json has (alternative names of one field); a missing one is one line."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    raise ConversionError(f"config.json: missing field {keys[0]}")


def check_tensor(tensor: LazyTensor, name: str, shape: tuple[int, ...]) -> None:
    """One line naming the file when a tensor's shape disagrees with config.json or its dtype is not a float."""
    if tuple(tensor.shape) != shape:
        raise ConversionError(
            f"{tensor.file.name}: tensor {name} has shape {list(tensor.shape)}, config.json implies {list(shape)}"
        )
    if tensor.dtype not in FLOAT_DTYPES:
        raise ConversionError(
            f"{tensor.file.name}: tensor {name} has dtype {tensor.dtype}, expected one of {', '.join(FLOAT_DTYPES)}"
        )
