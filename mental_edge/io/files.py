"""Owner-only files: every file we write may hold posts or judgements about them.

Files are created with their final mode in the `os.open` call (never chmod afterwards), so there is
no moment where another user could open them.
"""

import os
import tempfile
from pathlib import Path

from mental_edge.errors import MentalEdgeError

PRIVATE_MODE = 0o600


def create_private(path: Path, mode: int = PRIVATE_MODE) -> int:
    """Create `path` (which must not exist) for appending; returns the file descriptor."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, mode)
    except FileExistsError:
        raise
    except OSError as exc:
        raise MentalEdgeError(f"cannot create {path}: {exc.strerror}") from None


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write to a regular file may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_text(path, text: str, mode: int = PRIVATE_MODE) -> Path:
    """Write a whole file under a temporary name, fsync it, then rename it to `path`.

    A report produced whole must never appear half-written under its final name: a kill
    leaves either the previous file or the new one (and at worst a stray temporary file).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = _create_temp(directory, path.name, mode)
    try:
        write_all(fd, text.encode("utf-8"))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp_name, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        _remove_quietly(tmp_name)
        if isinstance(exc, OSError):  # a full disk, say: the old file (if any) is left as it was
            raise MentalEdgeError(f"cannot write {path}: {exc.strerror or exc}; nothing was replaced") from None
        raise
    _fsync_directory(directory)
    return path


def _create_temp(directory: Path, name: str, mode: int) -> tuple[int, str]:
    """mkstemp creates 0600; chmod the still-private temporary file to `mode` before it is renamed."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise MentalEdgeError(f"cannot write {directory / name}: {exc.strerror}") from None
    if mode != PRIVATE_MODE:
        os.fchmod(fd, mode)
    return fd, tmp_name


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
