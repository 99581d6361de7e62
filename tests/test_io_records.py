"""The record writer: owner-only files, no silent overwrite, resume after a real SIGKILL with every
row exactly once, repair of a half-written last record, and atomic whole-file writes."""

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mental_edge.errors import MentalEdgeError
from mental_edge.io import RecordWriter, atomic_write_text

HELPER = Path(__file__).parent / "support" / "write_records.py"
RECORD = {
    "id": "7",
    "task": "DR",
    "label": "no",
    "probabilities": {"no": 0.9, "yes": 0.1},
    "explanation": 'a, "quoted"\nmulti-line reason',
    "run": {"seed": 3, "model": "m"},
}


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _read(path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_new_output_is_owner_only_even_with_a_loose_umask(tmp_path, suffix):
    old = os.umask(0)
    try:
        with RecordWriter(tmp_path / f"out{suffix}") as writer:
            writer.write(RECORD)
    finally:
        os.umask(old)
    assert _mode(tmp_path / f"out{suffix}") == 0o600


def test_csv_fixed_columns_and_json_cells(tmp_path):
    path = tmp_path / "out.csv"
    with RecordWriter(path, fields=["id", "task", "label", "probabilities", "explanation", "run", "flag"]) as writer:
        writer.write(RECORD)
        writer.write({"id": "8", "task": "DR", "flag": "empty"})
    rows = _read(path)
    assert list(rows[0]) == ["id", "task", "label", "probabilities", "explanation", "run", "flag"]
    assert json.loads(rows[0]["probabilities"]) == RECORD["probabilities"]
    assert json.loads(rows[0]["run"]) == RECORD["run"]
    assert rows[0]["explanation"] == RECORD["explanation"]
    assert rows[1]["flag"] == "empty" and rows[1]["label"] == ""
    with RecordWriter(path, resume=True) as writer:
        with pytest.raises(MentalEdgeError, match="not among the CSV columns"):
            writer.write({**RECORD, "id": "9", "surprise": 1})


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "out.jsonl"
    with RecordWriter(path) as writer:
        writer.write(RECORD)
    assert _read(path) == [RECORD]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_existing_output_is_never_overwritten_without_resume(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with RecordWriter(path) as writer:
        writer.write(RECORD)
    before = path.read_bytes()
    with pytest.raises(MentalEdgeError, match="already exists: pass --resume"):
        RecordWriter(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_undecodable_text_in_a_record_is_escaped_not_a_crash(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with RecordWriter(path) as writer:
        writer.write({"id": "1", "task": "DR", "explanation": "bad \udcff byte"})
    (row,) = _read(path)
    assert row["explanation"] in ("bad \udcff byte", "bad \\udcff byte")
    with RecordWriter(path, resume=True) as writer:
        assert writer.done == {("1", "DR")}


def test_unknown_output_type_is_an_error(tmp_path):
    with pytest.raises(MentalEdgeError, match=r"\.jsonl or \.csv"):
        RecordWriter(tmp_path / "out.txt")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_after_sigkill_gives_every_row_once(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    total = 60  # two tasks each: 120 records
    # 20 ms a record: about 2.4 s for all 120, so the kill after 30 lands mid-run even on a busy machine
    child = subprocess.Popen([sys.executable, str(HELPER), str(path), str(total), "0.02"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"quotes") >= 30:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    written = path.read_bytes().count(b"quotes")
    assert 30 <= written < 2 * total, "the kill should land mid-run"
    subprocess.run([sys.executable, str(HELPER), str(path), str(total), "0"], check=True)
    keys = [(r["id"], r["task"]) for r in _read(path)]
    assert sorted(keys) == sorted((str(n), t) for n in range(total) for t in ("DR", "SAD"))
    assert _mode(path) == 0o600


@pytest.mark.parametrize("cut", [1, 10, 25, -1])
def test_truncated_last_jsonl_line_is_rewritten(tmp_path, cut):
    path = tmp_path / "out.jsonl"
    with RecordWriter(path) as writer:
        for n in range(3):
            writer.write({**RECORD, "id": str(n)})
    data = path.read_bytes()
    path.write_bytes(data[: cut - 1] if cut < 0 else data[: len(data) - cut])  # the kill's half line
    redone = {**RECORD, "id": "2", "explanation": "written again"}
    with RecordWriter(path, resume=True) as writer:
        assert writer.done == {("0", "DR"), ("1", "DR")}
        writer.write(redone)
    assert _read(path) == [{**RECORD, "id": "0"}, {**RECORD, "id": "1"}, redone]


@pytest.mark.parametrize("cut", [1, 2, 12, 30])
def test_truncated_last_csv_row_is_rewritten(tmp_path, cut):
    """Cuts land after the closing quote, inside the quoted multi-line explanation, and so on."""
    path = tmp_path / "out.csv"
    with RecordWriter(path) as writer:
        for n in range(3):
            writer.write({**RECORD, "id": str(n)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    redone = {**RECORD, "id": "2", "explanation": "written again"}
    with RecordWriter(path, resume=True) as writer:
        assert writer.done == {("0", "DR"), ("1", "DR")}
        writer.write(redone)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, strict=True))
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert [json.loads(r["run"]) for r in rows] == [RECORD["run"]] * 3
    assert {**rows[2], "run": redone["run"], "probabilities": redone["probabilities"]} == redone


def test_csv_cut_inside_the_header_starts_over(tmp_path):
    path = tmp_path / "out.csv"
    path.write_bytes(b"id,ta")
    with RecordWriter(path, resume=True) as writer:
        writer.write(RECORD)
    rows = _read(path)
    assert len(rows) == 1 and list(rows[0]) == list(RECORD) and rows[0]["id"] == "7"


def test_damage_before_the_end_is_refused_not_truncated(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "1", "task": "DR"}\nnot json\n{"id": "2", "task": "DR"}\n')
    before = path.read_bytes()
    with pytest.raises(MentalEdgeError, match="line 2 is not a JSON record"):
        RecordWriter(path, resume=True)
    assert path.read_bytes() == before


def test_resume_on_a_missing_file_creates_it(tmp_path):
    with RecordWriter(tmp_path / "new.jsonl", resume=True) as writer:
        assert writer.done == set()
        writer.write(RECORD)
    assert _mode(tmp_path / "new.jsonl") == 0o600


def test_atomic_write_text(tmp_path):
    path = tmp_path / "report.md"
    atomic_write_text(path, "first\n")
    assert path.read_text() == "first\n" and _mode(path) == 0o600
    atomic_write_text(path, "second\n", mode=0o644)
    assert path.read_text() == "second\n" and _mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary left


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")

    class Boom(str):
        def encode(self, *args):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write_text(path, Boom("new"))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
