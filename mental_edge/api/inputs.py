"""Posts in the shapes a script or notebook holds them, as the input rows the runner reads.

One string is post "1"; a list or any iterable of strings gets ids "1", "2", ... as `mental-edge analyze` gives
lines; (id, text) pairs and mappings keep their ids; a pandas Series keeps its index. A post that is not a string is
one error naming its position. Empty and undecodable posts become flagged rows, as in files.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mental_edge.errors import MentalEdgeError
from mental_edge.io.readers import InputRow, make_row

SOURCE = "python"
Posts = str | Iterable[Any] | Mapping[Any, Any]


def input_rows(posts: Posts) -> Iterator[InputRow]:
    """The rows of `posts`, lazily (an iterable is read as the analysis goes)."""
    if isinstance(posts, str):
        return iter([make_row("1", posts, SOURCE, 1)])
    pandas = sys.modules.get("pandas")  # a Series can only come from a pandas already imported
    if pandas is not None and isinstance(posts, pandas.Series):
        return _rows(((str(key), text) for key, text in posts.items()), keyed=True)
    if isinstance(posts, Mapping):
        return _rows(((str(key), text) for key, text in posts.items()), keyed=True)
    if isinstance(posts, (bytes, bytearray)) or not isinstance(posts, Iterable):
        raise MentalEdgeError(f"posts: expected a string, a list of strings or (id, text) pairs, got {_kind(posts)}")
    return _rows(_numbered(posts), keyed=False)


def _numbered(posts: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for number, item in enumerate(posts, start=1):
        if isinstance(item, tuple) and len(item) == 2:
            yield str(item[0]), item[1]
        else:
            yield str(number), item


def _rows(items: Iterable[tuple[str, Any]], keyed: bool) -> Iterator[InputRow]:
    for number, (row_id, text) in enumerate(items, start=1):
        if not isinstance(text, str):
            where = f"post {row_id!r}" if keyed else f"post {number} (id {row_id!r})"
            raise MentalEdgeError(f"{where}: expected a string, got {_kind(text)}")
        yield make_row(row_id, text, SOURCE, number)


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__
