"""Input readers: real IMHI files against the csv module and the published row counts, and
crafted bad files that must become flagged rows or one-line errors, never tracebacks."""

import csv
import io
import json

import pytest

from mental_edge.errors import MentalEdgeError
from mental_edge.io import input_files, is_imhi_file, read_file, read_input, rows_from_stream

# Rows per task, from the IMHI data's README (the published test split).
IMHI_ROWS = {
    "CAMS": 625,
    "DR": 405,
    "Irf": 2113,
    "MultiWD": 2441,
    "SAD": 684,
    "dreaddit": 414,
    "loneliness": 528,
    "t-sid": 959,
}


def _reference(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("folder", ["test_instruction", "test_complete", "expert"])
def test_imhi_files_read_every_row_with_its_gold(imhi_dir, folder):
    for path in input_files(imhi_dir / folder):
        rows = list(read_file(path))
        expected = _reference(path)
        assert is_imhi_file(path)
        if folder != "expert":
            assert len(rows) == IMHI_ROWS[path.stem]
        assert len(rows) == len(expected)
        assert [r.text for r in rows] == [e["query"] for e in expected]
        assert [r.gold for r in rows] == [e["gpt-3.5-turbo"] for e in expected]
        assert [r.id for r in rows] == [str(n) for n in range(1, len(rows) + 1)]
        assert all(r.flag is None and r.source == str(path) for r in rows)


def test_expert_posts_keep_their_embedded_newlines(imhi_dir):
    rows = list(read_file(imhi_dir / "expert" / "DR.csv"))
    assert "\n\nHas anyone used Ancestry.com lately?" in rows[0].text


def test_txt_one_post_per_line_blank_lines_counted(tmp_path):
    path = tmp_path / "posts.txt"
    path.write_bytes(b"\xef\xbb\xbffirst post\r\n\n   \nsecond post\nthird")
    rows = list(read_file(path))
    assert [(r.id, r.text, r.row_number) for r in rows] == [
        ("1", "first post", 1),
        ("4", "second post", 4),
        ("5", "third", 5),
    ]


def test_undecodable_bytes_flag_only_their_row(tmp_path):
    path = tmp_path / "posts.txt"
    path.write_bytes(b"good one\nbad \xff byte\nanother good\n")
    rows = list(read_file(path))
    assert [r.text for r in rows] == ["good one", None, "another good"]
    assert rows[1].flag.startswith("undecodable: byte 0xff")


def test_csv_columns_ids_bom_and_embedded_newlines(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes('\ufeffuid,post,extra\nA7,"line one\nline two, with comma",x\nB8,,y\n'.encode("utf-8"))
    rows = list(read_file(path, id_column="uid"))
    assert rows[0].id == "A7" and rows[0].text == "line one\nline two, with comma"
    assert rows[0].gold is None
    assert (rows[1].id, rows[1].text, rows[1].flag) == ("B8", None, "empty")


def test_csv_undecodable_cell_names_the_column(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"text\nfine\ncaf\xe9\n")
    rows = list(read_file(path))
    assert rows[0].text == "fine"
    assert rows[1].text is None and "0xe9" in rows[1].flag and "'text'" in rows[1].flag


def test_csv_short_row_is_flagged(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,hello\n2\n")
    rows = list(read_file(path, id_column="id"))
    assert rows[1].id == "2" and rows[1].flag == "missing field 'text'"


def test_missing_text_column_is_one_line_naming_file_and_columns(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,body\n1,hello\n")
    with pytest.raises(MentalEdgeError) as err:
        read_file(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "'id', 'body'" in message
    with pytest.raises(MentalEdgeError, match="no text column 'content'"):
        read_file(path, text_column="content")
    with pytest.raises(MentalEdgeError, match="no id column 'uid'"):
        read_file(path, text_column="body", id_column="uid")


def test_jsonl_rows_with_a_broken_line(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": 10, "text": "a post"}),
        "",
        '{"id": 11, "text": "cut off',
        json.dumps([1, 2]),
        json.dumps({"id": 12, "text": ""}),
        json.dumps({"id": 13, "other": "x"}),
        json.dumps({"id": 14, "text": "last"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    rows = list(read_file(path, id_column="id"))
    assert [r.row_number for r in rows] == [1, 3, 4, 5, 6, 7]
    assert rows[0].id == "10" and rows[0].text == "a post"
    assert rows[1].text is None and rows[1].flag.startswith("malformed JSON on line 3")
    assert "expected an object" in rows[2].flag
    assert rows[3].flag == "empty"
    assert rows[4].flag == "missing field 'text'"
    assert rows[5].text == "last"


def test_jsonl_undecodable_line_is_flagged(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "bad \xfe"}\n')
    rows = list(read_file(path))
    assert rows[0].text == "ok" and rows[1].flag.startswith("undecodable: line 2")


def test_jsonl_first_object_without_text_field_is_an_error(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"body": "x", "n": 1}\n')
    with pytest.raises(MentalEdgeError, match=r"no text column .*'body', 'n'"):
        list(read_file(path))


@pytest.mark.parametrize(
    "name, message", [("missing.csv", "no such file"), ("posts.xlsx", "unsupported input type '.xlsx'")]
)
def test_file_level_errors(tmp_path, name, message):
    if name.endswith(".xlsx"):
        (tmp_path / name).write_text("x")
    with pytest.raises(MentalEdgeError, match=message):
        read_file(tmp_path / name)


def test_text_argument_and_stdin():
    (row,) = read_input("just one post")
    assert (row.id, row.text, row.source, row.flag) == ("1", "just one post", "argument", None)
    (row,) = read_input("   ")
    assert row.flag == "empty"
    binary = io.BytesIO(b"\xef\xbb\xbfone\n\ntwo \xff\nthree\n")
    rows = list(rows_from_stream(binary))
    assert [(r.row_number, r.text) for r in rows] == [(1, "one"), (3, None), (4, "three")]
    assert rows[1].flag.startswith("undecodable") and rows[0].source == "<stdin>"
    assert [r.text for r in read_input(stdin=io.StringIO("a\nb\n"))] == ["a", "b"]


def test_large_file_is_streamed(tmp_path):
    """Rows come from the open file as they are read: a row appended after the first was read
    still appears, which it could not if the file had been loaded whole."""
    path = tmp_path / "big.csv"
    path.write_text("text\nfirst\n" + "x" * 300_000 + "\n")  # beyond csv's default field limit
    rows = read_file(path)
    assert next(rows).text == "first"
    with open(path, "a") as handle:
        handle.write("appended later\n")
    rest = [r.text for r in rows]
    assert len(rest[0]) == 300_000 and rest[1:] == ["appended later"]
