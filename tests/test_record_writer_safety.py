"""One writer per output and a full disk, on the record writer itself (no model: fast tier).

The full-disk cases write to a real full filesystem: a small tmpfs mounted for the test (root can; CI runs as root).
"""

import json
import subprocess
import sys
import textwrap

import pytest

from mental_edge.errors import MentalEdgeError
from mental_edge.io.files import atomic_write_text
from mental_edge.io.lock import OutputBusy, hold_output
from mental_edge.io.records import RecordWriter

HOLD = textwrap.dedent(
    """
    import sys, time
    from mental_edge.io.lock import hold_output
    hold_output(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def _record(i: int) -> dict:
    return {"id": str(i), "task": "DR", "label": "yes", "explanation": "x" * 300, "flags": [], "run": {"n": i}}


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/out.jsonl."""
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield out, proc
    proc.kill()
    proc.wait()


def test_second_writer_stops_naming_the_holder(holder):
    out, proc = holder
    with pytest.raises(OutputBusy) as err:
        RecordWriter(out, resume=True)
    assert f"process {proc.pid}" in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()  # the second writer wrote nothing, not even an empty file


def test_lock_of_a_killed_process_never_blocks(holder):
    out, proc = holder
    proc.kill()
    proc.wait()
    assert (out.parent / ".out.jsonl.lock").exists()  # left behind by the killed holder
    with RecordWriter(out) as writer:
        writer.write(_record(1))
    assert len(out.read_text().splitlines()) == 1
    assert not (out.parent / ".out.jsonl.lock").exists()  # a clean exit removes it


def test_lock_nests_within_one_process(tmp_path):
    out = tmp_path / "out.jsonl"
    with hold_output(out):
        with RecordWriter(out) as writer:  # the CLI holds the lock around the writer that takes it too
            writer.write(_record(1))
        assert hold_output(out).held
    assert not hold_output(out).held


@pytest.fixture
def tiny_disk(mount_tmpfs):
    """A 16 KiB tmpfs: it fills up after a few records."""
    return mount_tmpfs("16k")


def _fill(path, fmt_fields=None) -> tuple[int, str]:
    """Write records until the disk is full; (records written, the error line)."""
    with pytest.raises(MentalEdgeError) as err:
        with RecordWriter(path, fields=fmt_fields) as writer:
            for i in range(1000):
                writer.write(_record(i))
    return writer.records, str(err.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_full_disk_leaves_whole_records_and_resumes_exactly(tiny_disk, suffix):
    out = tiny_disk / f"out{suffix}"
    fields = ["id", "task", "label", "explanation", "flags", "run"] if suffix == ".csv" else None
    written, message = _fill(out, fields)
    assert 0 < written < 1000
    assert f"{out}" in message and "No space left on device" in message and "\n" not in message
    assert f"{written} whole records are in it" in message
    assert out.read_bytes().endswith(b"\n") and len(_ids(out, suffix)) == written  # no part of a record left
    subprocess.run(["mount", "-o", "remount,size=1m", str(tiny_disk)], check=True)  # room again
    with RecordWriter(out, resume=True, fields=fields) as writer:
        assert len(writer.done) == written  # nothing was cut by resume: the file ended in a whole record
        for i in range(1000):
            if (str(i), "DR") not in writer.done:
                writer.write(_record(i))
    ids = _ids(out, suffix)
    assert ids == [str(i) for i in range(1000)][: len(ids)] and len(ids) == 1000


def _ids(path, suffix) -> list[str]:
    lines = path.read_text().splitlines()
    if suffix == ".jsonl":
        return [json.loads(line)["id"] for line in lines]
    return [line.split(",", 1)[0] for line in lines[1:]]


def test_full_disk_report_keeps_the_old_file(tiny_disk):
    report = tiny_disk / "report.json"
    atomic_write_text(report, "old\n")
    with pytest.raises(MentalEdgeError, match="No space left on device; nothing was replaced"):
        atomic_write_text(report, "x" * 100_000)
    assert report.read_text() == "old\n"
    assert [p.name for p in tiny_disk.iterdir()] == ["report.json"]  # no temporary file left


def test_eval_stops_while_another_run_writes_its_report(tmp_path, imhi_dir):
    from click.testing import CliRunner

    from mental_edge.cli import main

    stem = tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(stem)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        data = imhi_dir / "test_instruction" / "DR.csv"
        result = CliRunner().invoke(main, ["eval", "-m", "/no/such.gguf", "--data", str(data), "--report", str(stem)])
    finally:
        proc.kill()
        proc.wait()
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert f"is being written by process {proc.pid}" in result.output  # before the model is even looked for
