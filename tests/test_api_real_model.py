"""The Python API on the real small model: records equal to `mental-edge analyze`'s to the bit (--exact), an
interrupt mid-run leaves a model that gives a fresh model's records, load/close keeps memory flat, and the
docs' examples and the example notebook run as written (the notebook in a real Jupyter kernel)."""

from __future__ import annotations

import _thread
import json
import re
import threading
from pathlib import Path

import pytest
from support.cli import run

import mental_edge
from mental_edge.io.readers import read_file

REPO = Path(__file__).resolve().parents[1]
POSTS = [
    "I cry every night and I can't get out of bed.",
    "Work deadlines keep me up and my chest feels tight all day.",
    "Spent the weekend hiking, feeling great.",
]


def test_records_equal_the_clis_to_the_bit_on_posts_and_imhi_rows(smollm2_gguf, imhi_dir, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(POSTS) + "\n")
    imhi = imhi_dir / "test_instruction" / "dreaddit.csv"
    common = ["-m", smollm2_gguf, "--exact", "--max-tokens", "16", "--ctx", "1024"]
    assert run("analyze", "-i", posts, "-t", "DR", "-t", "dreaddit", "-o", tmp_path / "a.jsonl", *common).exit_code == 0
    assert run("analyze", "-i", imhi, "--limit", "3", "-o", tmp_path / "b.jsonl", *common).exit_code == 0
    with mental_edge.load(smollm2_gguf, exact=True, ctx=1024) as model:
        from_posts = [r.to_dict() for r in model.analyze(POSTS, tasks=["DR", "dreaddit"], max_tokens=16)]
        from_rows = [
            r.to_dict() for r in model.iter_rows(read_file(imhi), taskset=model.taskset, limit=3, max_tokens=16)
        ]
    assert from_posts == _records(tmp_path / "a.jsonl")
    assert from_rows == _records(tmp_path / "b.jsonl") and all(r["gold"] for r in from_rows)


def test_an_interrupt_mid_run_leaves_a_model_that_gives_a_fresh_models_records(smollm2_gguf):
    with mental_edge.load(smollm2_gguf, exact=True, ctx=1024) as fresh:
        expected = fresh.analyze(POSTS, tasks=["DR", "dreaddit"], max_tokens=24)
    with mental_edge.load(smollm2_gguf, exact=True, ctx=1024) as model:
        records = []
        started = threading.Event()

        def ctrl_c():  # a Ctrl-C in the cell, while the engine is busy
            started.wait(30)
            _thread.interrupt_main()

        threading.Thread(target=ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            for record in model.iter_analyze(POSTS * 3, tasks=["DR", "dreaddit"], max_tokens=24):
                records.append(record)
                started.set()
                threading.Event().wait(5)  # the interrupt lands here or inside the engine
        assert len(records) < 18
        assert model.analyze(POSTS, tasks=["DR", "dreaddit"], max_tokens=24) == expected


def test_loading_and_closing_twenty_times_keeps_memory_flat(smollm2_gguf):
    def cycle():
        with mental_edge.load(smollm2_gguf, ctx=512) as model:
            model.analyze(POSTS[0], explain=False)

    for _ in range(3):  # allocator pools and llama.cpp's first-use buffers settle
        cycle()
    before = _rss_mb()
    for _ in range(20):
        cycle()
    grown = _rss_mb() - before
    assert grown < 25, f"resident memory grew {grown:.1f} MB over 20 load/close cycles"  # the model file is ~90 MB


def test_the_python_api_page_runs_as_written(smollm2_gguf, tmp_path, monkeypatch):
    """Every ```python block of docs/python-api.md, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python-api.md").read_text(), re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for n, block in enumerate(blocks, start=1):
        exec(compile(block, f"docs/python-api.md block {n}", "exec"), namespace)


def test_the_example_notebook_runs_in_a_real_kernel(smollm2_gguf):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "docs" / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<table" in h and "p(yes)" in h and "dreaddit" in h for h in html), "no DataFrame of records"
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs), "no figure"
    assert any("DR" in o.get("text", "") and "accuracy" in o.get("text", "") for o in outputs), "no report table"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
