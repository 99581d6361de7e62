"""Read `pytorch_model*.bin` files (torch.save's zip format) without torch and without running the pickle.

A .bin checkpoint is a zip holding `data.pkl` plus one raw byte record per tensor storage. The pickle
would normally call torch to rebuild tensors; pickles can call any importable function, so loading an
untrusted one is running its code. Here `find_class` accepts only the handful of globals torch writes
for tensors and maps each to a harmless builder of our own; anything else stops the load with an
error naming the file and the global. The storages are read from the zip lazily, one tensor at a time.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError

# torch storage classes -> (numpy dtype of the raw bytes, our dtype name)
_STORAGES = {
    "FloatStorage": (np.float32, "F32"),
    "HalfStorage": (np.float16, "F16"),
    "BFloat16Storage": (np.uint16, "BF16"),
    "DoubleStorage": (np.float64, "F64"),
    "LongStorage": (np.int64, "I64"),
    "IntStorage": (np.int32, "I32"),
    "ShortStorage": (np.int16, "I16"),
    "CharStorage": (np.int8, "I8"),
    "ByteStorage": (np.uint8, "U8"),
    "BoolStorage": (np.bool_, "BOOL"),
}


@dataclass(frozen=True)
class _StorageType:
    np_dtype: type
    name: str


@dataclass(frozen=True)
class _Storage:
    kind: _StorageType
    key: str
    numel: int


@dataclass(frozen=True)
class TensorRecord:
    """Where one tensor's values lie in the archive: a strided view of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.kind.name


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage record")
    return TensorRecord(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _TensorOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(*_STORAGES[name])
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.60}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError("a storage of unknown type")
        return _Storage(kind, str(key), int(numel))


class _Refused(Exception):
    """Raised from find_class; carries the refused global's dotted name."""


def _archive_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ConversionError(f"{path.name}: not a torch.save archive (no single */data.pkl inside)")
    return pickles[0].rsplit("/", 1)[0]


def read_index(path: Path) -> dict[str, TensorRecord]:
    """The tensors a .bin file holds, without loading their values. Refuses every non-tensor global."""
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _archive_prefix(zf, path)
            byteorder = f"{prefix}/byteorder"
            if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
                raise ConversionError(f"{path.name}: big-endian torch archives are not supported")
            with zf.open(f"{prefix}/data.pkl") as fp:
                state = _TensorOnlyUnpickler(fp).load()
    except _Refused as exc:
        raise ConversionError(
            f"{path.name}: refused to load: its pickle asks for the global {exc}, "
            "and only tensor data is accepted (nothing was executed)"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ConversionError(f"{path.name}: unreadable or truncated torch archive ({exc})") from None
    except pickle.UnpicklingError as exc:
        raise ConversionError(f"{path.name}: not a plain tensor dictionary ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, TensorRecord) for v in state.values()):
        raise ConversionError(f"{path.name}: expected a dictionary of tensors")
    return {str(k): v for k, v in state.items()}


def check_sizes(path: Path, records: dict[str, TensorRecord]) -> None:
    """Every storage record is present and long enough for the views on it (a truncated copy fails here)."""
    with zipfile.ZipFile(path) as zf:
        prefix = _archive_prefix(zf, path)
        sizes = {info.filename: info for info in zf.infolist()}
        for name, rec in records.items():
            info = sizes.get(f"{prefix}/data/{rec.storage.key}")
            itemsize = np.dtype(rec.storage.kind.np_dtype).itemsize
            if info is None or info.file_size < rec.storage.numel * itemsize:
                raise ConversionError(f"{path.name}: the data of tensor {name} is missing or truncated")
            last = rec.offset + sum((n - 1) * s for n, s in zip(rec.shape, rec.stride)) if all(rec.shape) else -1
            if last >= rec.storage.numel:
                raise ConversionError(f"{path.name}: tensor {name} reaches past the end of its storage")


def load(path: Path, rec: TensorRecord) -> np.ndarray:
    """The tensor's values as a fresh contiguous array in the storage's numpy dtype (bf16 as uint16)."""
    np_dtype = np.dtype(rec.storage.kind.np_dtype)
    with zipfile.ZipFile(path) as zf:
        prefix = _archive_prefix(zf, path)
        with zf.open(f"{prefix}/data/{rec.storage.key}") as fp:
            raw = fp.read(rec.storage.numel * np_dtype.itemsize)
    flat = np.frombuffer(raw, dtype=np_dtype, count=rec.storage.numel)
    strides = tuple(s * np_dtype.itemsize for s in rec.stride)
    view = np.lib.stride_tricks.as_strided(flat[rec.offset :], shape=rec.shape, strides=strides)
    return np.array(view, copy=True)
