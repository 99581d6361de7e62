"""`analyze --ray`: the same records as one machine, resumable, nothing lost or doubled when a worker dies.

One local Ray instance (two CPUs, as on this machine) serves the whole module; the CLI runs in-process and
uses it (`--ray local` joins a session that is already connected). Both run the batched engine (4 slots): its
records do not depend on which requests share its batches (tests/test_batching.py), so they do not depend on
how the rows are split between workers either.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from mental_edge import distributed
from mental_edge.cli import main
from mental_edge.errors import MentalEdgeError

POSTS = [
    "I cry every night and I can't get out of bed anymore.",
    "Had a great run this morning, feeling strong.",
    "My boss yelled at me again and my rent is due tomorrow.",
    "Nothing matters, I haven't eaten in days.",
    "Just adopted a puppy, she is the cutest!",
    "I keep failing my exams and my parents won't talk to me.",
    "Work is stressful but my friends help me through it.",
    "I feel empty and tired all the time, even after sleeping.",
]
ROWS = 16
SETTINGS = ["--task", "DR", "--task", "dreaddit", "--max-tokens", "6", "--threads", "1", "--exact"]  # to the bit


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """Token authentication on (Ray's default for a local instance since 2.59: it sets RAY_AUTH_MODE itself),
    the token it makes in a HOME of its own; the environment as it was afterwards."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
            env.setenv(name, "")  # remembered as unset, so that undoing removes what Ray sets
            env.delenv(name)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def posts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-in") / "posts.txt"
    path.write_text("\n".join(f"{POSTS[i % len(POSTS)]} (day {i})" for i in range(ROWS)) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(smollm2_gguf, posts, tmp_path_factory) -> list[dict]:
    """The single-machine run of the same rows and settings."""
    out = tmp_path_factory.mktemp("ray-ref") / "out.jsonl"
    result = analyze(smollm2_gguf, posts, out)
    assert result.exit_code == 0, result.output
    return read(out)


def analyze(model, posts, out, *extra):
    args = ["analyze", "-m", model, "-i", posts, "-o", out, *SETTINGS, *extra]
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def without_ray(records: list[dict]) -> list[dict]:
    """Records with the run info's `ray` entry taken out (the one thing a Ray run adds)."""
    return [{**r, "run": {k: v for k, v in r["run"].items() if k != "ray"}} for r in records]


def test_records_equal_the_single_machine_run(ray_session, smollm2_gguf, posts, reference, tmp_path):
    out = tmp_path / "out.jsonl"
    result = analyze(smollm2_gguf, posts, out, "--ray", "local", "--ray-workers", "2")
    assert result.exit_code == 0, result.output
    records = read(out)
    assert len(reference) == 2 * ROWS
    assert without_ray(records) == reference  # same records, same order
    assert {r["run"]["ray"]["workers"] for r in records} == {2}
    assert {r["run"]["ray"]["auth"] for r in records} == {"token"}
    assert "ran on Ray: 2 workers on 1 node(s)" in result.output


def test_resume_on_ray_sends_only_what_is_missing(ray_session, smollm2_gguf, posts, reference, tmp_path):
    out = tmp_path / "out.jsonl"
    lines, kept = [json.dumps(r) for r in reference], 11  # row 6 has one of its two tasks done
    out.write_text("\n".join(lines[:kept]) + "\n" + lines[kept][:40])  # a record cut short by a kill
    result = analyze(smollm2_gguf, posts, out, "--ray", "local", "--ray-workers", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert f"{2 * ROWS - kept} records written" in result.output and f"{kept} already there" in result.output
    records = read(out)
    assert without_ray(records) == reference
    assert all("ray" not in r["run"] for r in records[:kept]) and all("ray" in r["run"] for r in records[kept:])


def test_a_killed_worker_loses_and_doubles_nothing(ray_session, smollm2_gguf, posts, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "CHUNK_ROWS", 3)  # more chunks, so the kill finds some in flight
    out = tmp_path / "out.jsonl"
    outcome = {}
    run = threading.Thread(
        target=lambda: outcome.setdefault(
            "result", analyze(smollm2_gguf, posts, out, "--ray", "local", "--ray-workers", "2")
        )
    )
    run.start()
    victim = wait_for_busy_worker(out, lambda: run.is_alive())
    os.kill(victim, 9)  # the worker process itself, as a crashed node would lose it
    run.join(timeout=300)
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert "1 worker(s) lost" in result.output, result.output
    records = read(out)
    keys = [(r["id"], r["task"]) for r in records]
    assert len(keys) == len(set(keys)) == 2 * ROWS
    assert without_ray(records) == reference


def wait_for_busy_worker(out: Path, running, timeout=120) -> int:
    """The pid of a Ray worker running `analyze`, once the first records are written."""
    deadline = time.time() + timeout
    while time.time() < deadline and running():
        if out.exists() and out.read_text().count("\n") >= 2:
            busy = [pid for pid, title in ray_processes() if title.startswith("ray::_Worker.analyze")]
            if busy:
                return busy[0]
        time.sleep(0.05)
    pytest.fail("no worker was busy mid-run: the run ended or never started")


def ray_processes():
    """(pid, title) of this machine's Ray worker processes (Ray sets each one's title to its task)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode("utf-8", "replace")
            except OSError:
                continue
            if title.startswith("ray::"):
                yield int(entry.name), title


def test_a_worker_that_cannot_see_the_model_says_so(ray_session, smollm2_gguf):
    spec = distributed.model_spec(str(smollm2_gguf))
    elsewhere = distributed.ModelSpec(**{**spec.__dict__, "path": "/nowhere/model.gguf"})
    with pytest.raises(MentalEdgeError, match="no such model file.*same path on every node"):
        distributed.RayAnalysis("local", elsewhere, {}, workers=1)
    other_file = distributed.ModelSpec(**{**spec.__dict__, "size": spec.size + 1})
    with pytest.raises(MentalEdgeError, match="is not the driver's file"):
        distributed.RayAnalysis("local", other_file, {}, workers=1)


def test_without_ray_one_line_says_how_to_get_it(smollm2_gguf, posts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = CliRunner().invoke(
        main, ["analyze", "-m", str(smollm2_gguf), "-i", str(posts), "--task", "DR", "--ray", "local"]
    )
    assert result.exit_code == 1
    assert result.output == f"Error: {distributed.MISSING_RAY}\n"
    assert not (tmp_path / "out.jsonl").exists()
    result = CliRunner().invoke(main, ["analyze", "-m", str(smollm2_gguf), "--task", "DR", "--ray-workers", "2", "x"])
    assert result.exit_code == 1 and result.output == "Error: --ray-workers needs --ray ADDRESS\n"
