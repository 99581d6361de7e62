"""Reading posts in and writing records out (see readers.py, records.py, files.py)."""

from mental_edge.io.files import atomic_write_text
from mental_edge.io.readers import (
    InputRow,
    input_files,
    is_imhi_file,
    read_file,
    read_input,
    rows_from_stream,
    rows_from_text,
)
from mental_edge.io.records import RecordWriter

__all__ = [
    "InputRow",
    "RecordWriter",
    "atomic_write_text",
    "input_files",
    "is_imhi_file",
    "read_file",
    "read_input",
    "rows_from_stream",
    "rows_from_text",
]
