"""Input readers: every source of posts becomes a stream of `InputRow`s.

Sources: a text argument, stdin or a .txt file (one post per line), .csv and .jsonl files, and
IMHI query files (CSV with `query` and `gpt-3.5-turbo` columns). Files are streamed, never read
whole. Bad rows do not stop a run: an empty post, undecodable bytes or a malformed JSONL line
become a row with `flag` set (and `text` None) so the analysis writes a flagged record for it.
Problems with the file as a whole (missing, unknown type, no text column) raise MentalEdgeError.

Undecodable bytes are found by decoding with `surrogateescape`: each bad byte becomes a lone
surrogate character that we look for per row, so one bad row never spoils the rest of the file.
"""

import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mental_edge.errors import MentalEdgeError

TEXT_COLUMNS = ("text", "post", "query")
"""Default text column: the first of these a file has."""

GOLD_COLUMN = "gpt-3.5-turbo"
"""IMHI files keep the gold answer (label sentence, then ` Reasoning: ...`) in this column."""

SUFFIXES = (".txt", ".csv", ".jsonl")

_ENCODING = "utf-8-sig"  # also reads plain utf-8; drops a leading BOM
_SURROGATE = re.compile("[\udc80-\udcff]")

csv.field_size_limit(2**31 - 1)  # posts can exceed csv's default 128 KiB field limit


@dataclass(frozen=True)
class InputRow:
    """One post to analyse. `text` is None exactly when `flag` says why it cannot be analysed."""

    id: str
    text: str | None
    source: str
    row_number: int
    flag: str | None = None
    gold: str | None = None


def read_input(
    text: str | None = None,
    path=None,
    stdin: IO | None = None,
    *,
    text_column: str | None = None,
    id_column: str | None = None,
) -> Iterator[InputRow]:
    """The rows of whichever input was given: a text argument, a file, or else stdin."""
    if text is not None and path is not None:
        raise MentalEdgeError("give either a text argument or --input FILE, not both")
    if text is not None:
        return rows_from_text(text)
    if path is not None:
        return read_file(path, text_column=text_column, id_column=id_column)
    return rows_from_stream(stdin if stdin is not None else sys.stdin)


def rows_from_text(text: str, source: str = "argument") -> Iterator[InputRow]:
    """A single post given on the command line (argv may carry undecodable bytes as surrogates)."""
    yield make_row("1", text, source, 1)


def rows_from_stream(stream: IO, source: str = "<stdin>") -> Iterator[InputRow]:
    """One post per line from a text or binary stream (stdin); blank lines skipped but counted.

    The stream is read, never closed. Bytes are decoded line by line so that a bad byte only
    flags its own line.
    """
    binary = getattr(stream, "buffer", stream)
    lines = binary if isinstance(binary.read(0), bytes) else stream
    return _line_rows((_decode(line, n) for n, line in enumerate(lines)), source)


def _decode(line, index: int) -> str:
    if isinstance(line, str):
        return line
    text = line.decode("utf-8", "surrogateescape")
    return text.removeprefix("\ufeff") if index == 0 else text


def read_file(path, *, text_column: str | None = None, id_column: str | None = None) -> Iterator[InputRow]:
    """Rows of a .txt, .csv (IMHI query files included) or .jsonl file, streamed.

    Errors about the file as a whole are raised here, before the first row is read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MentalEdgeError(f"{path}: unsupported input type {suffix or '(no suffix)'!r}; use {', '.join(SUFFIXES)}")
    if suffix == ".txt" and (text_column or id_column):
        raise MentalEdgeError(f"{path}: --text-column and --id-column apply to .csv and .jsonl inputs")
    handle = _open_text(path)
    if suffix == ".txt":
        return _txt_rows(handle, path)
    if suffix == ".csv":
        return _csv_rows(handle, path, text_column, id_column)
    return _jsonl_rows(handle, path, text_column, id_column)


def input_files(path) -> list[Path]:
    """A file as a one-item list, or the .csv files of a folder in name order (for `eval --data`)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
        if not files:
            raise MentalEdgeError(f"{path}: no .csv files in this folder")
        return files
    if not path.exists():
        raise MentalEdgeError(f"{path}: no such file or folder")
    return [path]


def is_imhi_file(path) -> bool:
    """Whether a CSV file has the IMHI columns `query` and `gpt-3.5-turbo`."""
    with _open_text(Path(path)) as handle:
        header = next(csv.reader(handle), [])
    return "query" in header and GOLD_COLUMN in header


def _open_text(path: Path) -> IO[str]:
    try:
        return open(path, encoding=_ENCODING, errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise MentalEdgeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MentalEdgeError(f"{path}: is a folder, not an input file") from None
    except OSError as exc:
        raise MentalEdgeError(f"{path}: cannot read: {exc.strerror}") from None


def _txt_rows(handle: IO[str], path: Path) -> Iterator[InputRow]:
    with handle:
        yield from _line_rows(handle, str(path))


def _line_rows(lines: Iterable[str], source: str) -> Iterator[InputRow]:
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.strip():
            yield make_row(str(number), line, source, number)


def _csv_rows(handle: IO[str], path: Path, text_column, id_column) -> Iterator[InputRow]:
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        handle.close()
        raise MentalEdgeError(f"{path}: unreadable CSV header: {exc}") from None
    if not header:
        handle.close()
        raise MentalEdgeError(f"{path}: empty file, expected a header row")
    try:
        text_column = _pick_text_column(path, header, text_column)
        _check_id_column(path, header, id_column)
    except MentalEdgeError:
        handle.close()
        raise
    return _csv_body(handle, reader, path, header, text_column, id_column)


def _csv_body(handle, reader, path, header, text_column, id_column) -> Iterator[InputRow]:
    gold_column = GOLD_COLUMN if GOLD_COLUMN in header else None
    with handle:
        number = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise MentalEdgeError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
            if not cells:
                continue  # a blank line between records, not a post
            number += 1
            yield _row_from_fields(dict(zip(header, cells)), path, number, text_column, id_column, gold_column)


def _jsonl_rows(handle: IO[str], path: Path, text_column, id_column) -> Iterator[InputRow]:
    with handle:
        chosen = None
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record, problem = _parse_json_object(line, number)
            if problem:
                yield InputRow(str(number), None, str(path), number, flag=problem)
                continue
            if chosen is None:  # the first object decides the columns, as a CSV header would
                chosen = _pick_text_column(path, list(record), text_column)
                _check_id_column(path, list(record), id_column)
            yield _row_from_fields(record, path, number, chosen, id_column, GOLD_COLUMN)


def _parse_json_object(line: str, number: int) -> tuple[dict | None, str | None]:
    if _SURROGATE.search(line):
        return None, f"undecodable: line {number} has bytes that are not UTF-8"
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON on line {number}: {exc.msg} at column {exc.colno}"
    if not isinstance(value, dict):
        return None, f"malformed JSON on line {number}: expected an object, got {type(value).__name__}"
    return value, None


def _pick_text_column(path: Path, columns: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise MentalEdgeError(f"{path}: no text column {wanted!r}; columns: {_names(columns)}")
        return wanted
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    raise MentalEdgeError(
        f"{path}: no text column (looked for {', '.join(TEXT_COLUMNS)}); "
        f"columns: {_names(columns)}; choose one with --text-column"
    )


def _check_id_column(path: Path, columns: list[str], wanted: str | None) -> None:
    if wanted is not None and wanted not in columns:
        raise MentalEdgeError(f"{path}: no id column {wanted!r}; columns: {_names(columns)}")


def _names(columns: list[str]) -> str:
    return ", ".join(repr(_printable(str(c))) for c in columns) or "(none)"


def _row_from_fields(
    fields: dict, path: Path, number: int, text_column: str, id_column: str | None, gold_column: str | None
) -> InputRow:
    row_id = str(number) if id_column is None else _id_value(fields.get(id_column), number)
    gold = fields.get(gold_column) if gold_column else None
    if text_column not in fields:
        return InputRow(row_id, None, str(path), number, flag=f"missing field {text_column!r}")
    text = fields[text_column]
    if text is not None and not isinstance(text, str):
        return InputRow(
            row_id, None, str(path), number, flag=f"field {text_column!r} is a {type(text).__name__}, not text"
        )
    gold = gold if isinstance(gold, str) and not _SURROGATE.search(gold) else None
    return make_row(row_id, text or "", str(path), number, gold=gold, where=f" in {text_column!r}")


def _id_value(value, number: int) -> str:
    """An id as text; a row without one falls back to its row number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return str(number)
    return _printable(str(value))


def make_row(row_id: str, text: str, source: str, number: int, *, gold: str | None = None, where: str = "") -> InputRow:
    """One input row by the readers' rules: undecodable or empty text flagged, the id made printable."""
    bad = _SURROGATE.search(text)
    if bad:
        byte = ord(bad.group()) - 0xDC00
        flag = f"undecodable: byte 0x{byte:02x} is not UTF-8 (character {bad.start() + 1}{where})"
        return InputRow(_printable(row_id), None, source, number, flag=flag, gold=gold)
    if not text.strip():
        return InputRow(row_id, None, source, number, flag="empty", gold=gold)
    return InputRow(_printable(row_id), text, source, number, gold=gold)


def _printable(value: str) -> str:
    """Undecodable bytes in an id or column name shown as \\xNN, so they can be written out."""
    if not _SURROGATE.search(value):
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
