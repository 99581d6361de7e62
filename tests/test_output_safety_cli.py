"""Two runs on one output, and a run onto a full disk, through the real CLI on the real small model.

Runs are --exact: a resumed run gives the records of an uninterrupted one to the bit only there (docs/analysis.md).
"""

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

POSTS = [f"Post number {i}: I feel {'sad and tired' if i % 2 else 'fine'} today." for i in range(10)]


def _args(model, posts, out, *extra):
    return [
        sys.executable,
        *(
            "-m",
            "mental_edge",
            "analyze",
            "-m",
            str(model),
            "--task",
            "DR",
            "--no-explain",
            "--threads",
            "2",
            "--exact",
        ),
        *("-i", str(posts), "-o", str(out), *extra),
    ]


def _records(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture
def posts(tmp_path):
    path = tmp_path / "posts.txt"
    path.write_text("\n".join(POSTS) + "\n")
    return path


def test_a_second_run_on_the_same_output_stops_and_the_first_writes_each_row_once(smollm2_gguf, posts, tmp_path):
    out = tmp_path / "out.jsonl"
    first = subprocess.Popen(_args(smollm2_gguf, posts, out, "--resume"), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / ".out.jsonl.lock").exists() and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(_args(smollm2_gguf, posts, out, "--resume"), capture_output=True, text=True, timeout=120)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"process {first.pid}" in lines[0], second.stderr
    assert sorted(int(r["id"]) for r in _records(out)) == list(range(1, 11))  # every row once, not twice


@pytest.fixture
def tiny_disk(mount_tmpfs):
    """A 8 KiB tmpfs: it fills up after a few records."""
    return mount_tmpfs("8k")


def test_a_full_disk_gives_one_line_and_resume_completes_the_same_records(smollm2_gguf, posts, tmp_path, tiny_disk):
    whole = tmp_path / "whole.jsonl"
    assert subprocess.run(_args(smollm2_gguf, posts, whole), capture_output=True, timeout=300).returncode == 0
    out = tiny_disk / "out.jsonl"
    full = subprocess.run(_args(smollm2_gguf, posts, out), capture_output=True, text=True, timeout=300)
    assert full.returncode == 1
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot write") and "No space left on device" in last, full.stderr
    assert "Traceback" not in full.stderr
    kept = _records(out)  # every line whole
    assert 0 < len(kept) < 10 and f"{len(kept)} whole records are in it" in last
    subprocess.run(["mount", "-o", "remount,size=1m", str(tiny_disk)], check=True)
    resumed = subprocess.run(_args(smollm2_gguf, posts, out, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    got = sorted(_records(out), key=lambda r: int(r["id"]))
    want = sorted(_records(whole), key=lambda r: int(r["id"]))
    assert [(r["id"], r["label"], r["probabilities"]) for r in got] == [
        (r["id"], r["label"], r["probabilities"]) for r in want
    ]
