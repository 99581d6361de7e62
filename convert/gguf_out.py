"""The streaming GGUF writer: metadata, then tensor infos, then tensors one at a time.

The file is written under a temporary name in the destination folder and renamed only when every
tensor is in; any exception, KeyboardInterrupt included, removes the temporary file, so a file with
the final name is always complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from . import outtypes
from .errors import ConversionError

Progress = Callable[[int, int, str], None]  # (tensors done, total, name of the last one)


@dataclass
class OutTensor:
    """One output tensor: its GGUF name, logical shape (numpy order), GGML type and how to make its bytes."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return outtypes.nbytes(self.shape, self.qtype)


def temp_path(final: Path, suffix: str = ".part") -> Path:
    """A fresh, owner-only temporary file beside `final` (same file system, so the rename is atomic)."""
    if not final.parent.is_dir():
        raise ConversionError(f"{final}: the output folder {final.parent} does not exist")
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, final: Path) -> Path:
    """Give the finished temporary file the usual permissions and its final name."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)
    return final


def write_gguf(
    path: str | os.PathLike,
    arch: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    tensors: Sequence[OutTensor],
    progress: Progress | None = None,
) -> Path:
    final = Path(path)
    tmp = temp_path(final)
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        add_metadata(writer)
        for t in tensors:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, t in enumerate(tensors, 1):
            data = t.produce()
            if data.nbytes != t.nbytes:
                raise RuntimeError(f"{t.name}: produced {data.nbytes} bytes, planned {t.nbytes}")
            writer.write_tensor_data(data)
            del data
            if progress is not None:
                progress(done, len(tensors), t.name)
        writer.close()
        return publish(tmp, final)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
