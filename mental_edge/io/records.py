"""The resumable, owner-only record writer.

Records (one per post and task) are appended as JSONL or CSV, chosen by the output's extension.
Each record goes to the file in one `write` call as soon as it is finished, and the file is
fsynced every few rows or every second, so a killed run loses at most the rows in flight.

`resume=True` reads the existing output first: `done` holds the (id, task) pairs already written,
and a record cut short by a kill (the last line, possibly without its newline) is truncated away
so that it is written again whole, never left corrupt and never duplicated.

One run writes an output at a time (`io.lock`: a second one stops with the holder's process id). A write that
fails (a full disk) is cut back to the last whole record and reported in one line with the number of records
safely in the file, so `--resume` on a disk with room continues exactly.
"""

import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mental_edge.errors import MentalEdgeError
from mental_edge.io.files import create_private, write_all
from mental_edge.io.lock import hold_output

FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
_ENCODE_ERRORS = "backslashreplace"  # a stray undecodable byte is written as \udcNN, never a crash


class RecordWriter:
    """Append records to `path` (.jsonl or .csv); see the module docstring.

    CSV columns are `fields` if given, else the keys of the first record (or the existing header on
    resume), fixed once written; nested values (probabilities, run info) are JSON in their cell.
    """

    def __init__(
        self,
        path,
        resume: bool = False,
        *,
        fields: list[str] | None = None,
        fsync_every: int = 20,
        fsync_seconds: float = 1.0,
    ):
        self.path = Path(path)
        self.format = _format_of(self.path)
        self.fields = list(fields) if fields else None
        self.done: set[tuple[str, str]] = set()
        self._fsync_every, self._fsync_seconds = fsync_every, fsync_seconds
        self._unsynced, self._last_sync = 0, time.monotonic()
        self._header_written = False
        self.records = 0  # whole records in the file (those found on resume included)
        self._size = 0  # bytes of whole records: where a failed write is cut back to
        self._failed = False
        self._lock = hold_output(self.path)
        self._lock.acquire()
        try:
            self._fd = self._open(resume)
        except BaseException:
            self._lock.release()
            raise
        self._size = os.fstat(self._fd).st_size

    def _open(self, resume: bool) -> int:
        if self.path.exists() and not resume:
            raise MentalEdgeError(
                f"{self.path} already exists: pass --resume to continue it, or choose another output file"
            )
        if self.path.exists():
            self._load_existing()
            return _open_append(self.path)
        try:
            return create_private(self.path)
        except FileExistsError:  # created between our check and the open
            raise MentalEdgeError(
                f"{self.path} already exists: pass --resume to continue it, or choose another output file"
            ) from None

    def _load_existing(self) -> None:
        data = _read_bytes(self.path)
        if self.format == "jsonl":
            keys, good_end = _scan_jsonl(data, self.path)
        else:
            header, keys, good_end = _scan_csv(data, self.path)
            if header:
                self.fields, self._header_written = header, True
        self.done = keys
        self.records = len(keys)
        if good_end < len(data):
            os.truncate(self.path, good_end)

    def write(self, record) -> None:
        """Append one record (a mapping or a dataclass) and flush it to the OS."""
        record = _as_dict(record)
        data = self._encode(record)
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self._cut_back()
            raise self._failure(exc, "write") from None
        self._size += len(data)
        self.records += 1
        self.done.add(_key(record))
        self._unsynced += 1
        if self._unsynced >= self._fsync_every or time.monotonic() - self._last_sync >= self._fsync_seconds:
            self.sync()

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise self._failure(exc, "flush") from None
        self._unsynced, self._last_sync = 0, time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                if not self._failed:
                    self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
                self._lock.release()

    def _cut_back(self) -> None:
        """Drop the part of a record a failed write left, so the file ends with a whole record."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # resume cuts an incomplete last record away all the same

    def _failure(self, exc: OSError, action: str) -> MentalEdgeError:
        self._failed = True
        return MentalEdgeError(
            f"cannot {action} {self.path}: {exc.strerror or exc}; {self.records} whole records are in it. "
            "Make room, then run the same command with --resume to continue"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _encode(self, record: dict) -> bytes:
        if self.format == "jsonl":
            line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
            return line.encode("utf-8", _ENCODE_ERRORS)
        return self._encode_csv(record)

    def _encode_csv(self, record: dict) -> bytes:
        if self.fields is None:
            self.fields = list(record)
        extra = [k for k in record if k not in self.fields]
        if extra:
            raise MentalEdgeError(
                f"{self.path}: record fields {extra} are not among the CSV columns {self.fields}; write to a new file"
            )
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not self._header_written:
            writer.writerow(self.fields)
            self._header_written = True
        writer.writerow([_cell(record.get(name)) for name in self.fields])
        return buffer.getvalue().encode("utf-8", _ENCODE_ERRORS)


def _format_of(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise MentalEdgeError(f"{path}: output must end in .jsonl or .csv") from None


def _open_append(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise MentalEdgeError(f"cannot append to {path}: {exc.strerror}") from None


def _read_bytes(path: Path) -> bytes:
    """The existing output, read once on resume to learn what is done."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MentalEdgeError(f"cannot read {path} to resume it: {exc.strerror}") from None


def _as_dict(record) -> dict:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.asdict(record)
    if isinstance(record, Mapping):
        return dict(record)
    raise TypeError(f"a record must be a mapping or a dataclass, not {type(record).__name__}")


def _key(record: Mapping[str, Any]) -> tuple[str, str]:
    return str(record.get("id")), str(record.get("task"))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _scan_jsonl(data: bytes, path: Path) -> tuple[set, int]:
    """Keys of the complete lines and the offset where the complete lines end.

    Only the last line may be incomplete (no newline, or not valid JSON): that is what a kill leaves.
    A bad line before others is damage we did not cause, so we stop rather than guess.
    """
    keys, pos = set(), 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            return keys, pos  # the last line has no newline: cut off by a kill
        line = data[pos:end]
        if line.strip():
            record = _json_line(line)
            if record is None:
                if data[end + 1 :].strip():
                    number = data.count(b"\n", 0, pos) + 1
                    raise MentalEdgeError(f"{path}: line {number} is not a JSON record; cannot resume this file safely")
                return keys, pos
            keys.add(_key(record))
        pos = end + 1
    return keys, pos


def _json_line(line: bytes):
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _scan_csv(data: bytes, path: Path) -> tuple[list[str] | None, set, int]:
    """Header, keys of the complete rows, and the offset where the complete rows end.

    A row is complete when it has as many cells as the header and its last line ends in a newline;
    an incomplete row is allowed only at the very end (cut by a kill) and is truncated away.
    """
    lines = _LineTracker(data.decode("utf-8", "surrogateescape"))
    reader = csv.reader(lines, strict=True)
    header, keys, good_end = None, set(), 0
    try:
        for cells in reader:
            if not lines.ended_with_newline or (header is not None and len(cells) != len(header)):
                break
            if header is None:
                header = cells
            else:
                keys.add(_key(dict(zip(header, cells))))
            good_end = lines.byte_offset
    except csv.Error:
        pass  # a quoted field left open by a kill ends the complete rows
    if not lines.at_end:
        raise MentalEdgeError(
            f"{path}: the record on line {reader.line_num} is malformed; cannot resume this file safely"
        )
    return header, keys, good_end


class _LineTracker:
    """Feeds csv.reader the text split at "\n" only, counting the bytes fed so far.

    (str.splitlines would also split at \u2028 and friends, which csv does not quote.)
    """

    def __init__(self, text: str):
        self._text, self._pos = text, 0
        self.byte_offset = 0
        self.ended_with_newline = True

    @property
    def at_end(self) -> bool:
        return self._pos >= len(self._text)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.at_end:
            raise StopIteration
        end = self._text.find("\n", self._pos)
        end = len(self._text) if end < 0 else end + 1
        line = self._text[self._pos : end]
        self._pos = end
        self.byte_offset += len(line.encode("utf-8", "surrogateescape"))
        self.ended_with_newline = line.endswith("\n")
        return line
