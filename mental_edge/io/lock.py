"""One writer per output: an OS lock on a small file beside it.

Two runs appending to one output (the old job still going when the same command is started again with
`--resume`) would each write every row. So a run takes an exclusive lock on `.NAME.lock` in the output's folder
before it reads or writes the output, and a second run stops at once, saying which process holds it. The lock
is the operating system's (flock on POSIX, msvcrt on Windows): it goes with the process that held it, so a run
that was killed never blocks the next one, whatever it left on disk. The lock file records the holder's process
id, host and start time only: never the command line, which may hold a post.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from mental_edge.errors import MentalEdgeError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class OutputBusy(MentalEdgeError):
    """Another process is writing this output."""


class OutputLock:
    """An exclusive lock on `path`'s lock file; re-entrant within one process (see `hold_output`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.parent / f".{self.path.name}.lock"
        self._fd = -1
        self._holders = 0

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        if self._holders == 0:
            self._fd = self._take()
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders > 0 or self._fd < 0:
            return
        _remove_quietly(self.lock_path)  # before the unlock, so nobody locks a file about to vanish
        os.close(self._fd)
        self._fd = -1
        _LOCKS.pop(_key(self.path), None)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def _take(self) -> int:
        while True:
            fd = self._open()
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputBusy(
                    f"{self.path} is being written by {holder}: wait for that run to end (or stop it), "
                    "then run again; two runs never write one output"
                )
            if _same_file(fd, self.lock_path):
                _write_holder(fd)
                return fd
            os.close(fd)  # the holder we waited on removed the file after we opened it: take the new one

    def _open(self) -> int:
        try:
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise MentalEdgeError(f"cannot lock {self.path} (creating {self.lock_path}: {exc.strerror})") from None


_LOCKS: dict[str, OutputLock] = {}


def hold_output(path: str | Path) -> OutputLock:
    """The lock of `path` for this process, to use as a context manager (or acquire/release).

    Taking it again in the same process (the CLI around a whole run, the record writer inside it) nests."""
    key = _key(Path(path))
    lock = _LOCKS.get(key)
    if lock is None:
        lock = _LOCKS[key] = OutputLock(path)
    return lock


def _key(path: Path) -> str:
    return str(path.expanduser().resolve())


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _write_holder(fd: int) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096) or b"{}")
        where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
        return f"process {holder['pid']}{where} (since {holder['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
