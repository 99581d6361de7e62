"""`analyze`, `eval`, `generate` and `prompt --model` through the real CLI on the real small model."""

import csv
import json
import signal
import stat
import subprocess
import sys
import time

import pytest
from sklearn.metrics import accuracy_score, f1_score
from support.cli import run
from support.imhi import imhi_subset

from mental_edge.engine import load_engine


def test_analyze_a_post_prints_a_label_of_the_task(smollm2_gguf):
    result = run(
        "analyze",
        "-m",
        smollm2_gguf,
        "--task",
        "DR",
        "--max-tokens",
        "8",
        "I cry every night and I can't get out of bed.",
    )
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("[1] DR: ") and first.split()[2] in ("yes", "no")
    assert "yes 0." in first and "no 0." in first


def test_analyze_imhi_rows_to_jsonl_with_gold_and_provenance(smollm2_gguf, imhi_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run(
        "analyze",
        "-m",
        smollm2_gguf,
        "-i",
        imhi_dir / "test_instruction" / "SAD.csv",
        "--limit",
        "3",
        "--no-explain",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3"] and {r["task"] for r in records} == {"SAD"}
    gold = ["financial problem", "work", "work"]  # the first three gold sentences of SAD.csv
    assert [r["gold"] for r in records] == gold
    run_info = records[0]["run"]
    assert run_info["model_sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert run_info["quantization"] == "Q4_1" and run_info["sampling"] == {"temperature": 0.0}
    assert {"threads", "n_ctx", "engine", "prompt_format"} <= set(run_info)
    assert len(records[0]["template_sha256"]) == 64


def test_a_killed_run_resumes_with_every_row_exactly_once(smollm2_gguf, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(f"Post number {i}: I feel {'sad' if i % 2 else 'fine'} today." for i in range(12)))
    out = tmp_path / "out.jsonl"
    args = [
        sys.executable,
        "-m",
        "mental_edge",
        "analyze",
        "-m",
        str(smollm2_gguf),
        "--task",
        "DR",
        "--no-explain",
        "-i",
        str(posts),
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 3 <= written < 12, "the kill should land mid-run"
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 13)]
    assert f"{written} already there" in resumed.stderr


def test_bad_inputs_give_one_line_or_flagged_records(smollm2_gguf, tmp_path):
    table = tmp_path / "posts.csv"
    table.write_text("id,body\n1,\n2,I feel hopeless\n")
    result = run("analyze", "-m", smollm2_gguf, "--task", "DR", "-i", table)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "posts.csv" in result.output and "body" in result.output
    out = tmp_path / "out.csv"
    result = run(
        "analyze",
        "-m",
        smollm2_gguf,
        "--task",
        "DR",
        "-i",
        table,
        "--text-column",
        "body",
        "--id-column",
        "id",
        "--no-explain",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["1", "2"]
    assert json.loads(rows[0]["flags"]) == ["empty"] and rows[0]["label"] == ""
    assert rows[1]["label"] in ("yes", "no")
    again = run("analyze", "-m", smollm2_gguf, "--task", "DR", "-i", table, "--text-column", "body", "-o", out)
    assert again.exit_code == 1 and "--resume" in again.output
    missing = run("analyze", "-m", tmp_path / "nope.gguf", "--task", "DR", "hi")
    assert missing.exit_code == 1 and missing.output.startswith("Error: ") and "nope.gguf" in missing.output
    no_task = run("analyze", "-m", smollm2_gguf, "hello")
    assert no_task.exit_code == 1 and "--task" in no_task.output
    unknown = run("analyze", "-m", smollm2_gguf, "--task", "XYZ", "hello")
    assert unknown.exit_code == 1 and "DR" in unknown.output


def test_eval_reports_the_published_metrics(smollm2_gguf, imhi_dir, tmp_path):
    data = imhi_subset(imhi_dir, tmp_path / "data", ("DR", "Irf"), rows=4)
    stem = tmp_path / "report"
    result = run("eval", "-m", smollm2_gguf, "--data", data, "--report", stem)
    assert result.exit_code == 0, result.output
    report = json.loads((stem.with_suffix(".json")).read_text())
    assert set(report["tasks"]) == {"DR", "Irf-belongingness", "Irf-burdensomeness"}
    assert (stem.with_suffix(".md")).exists()
    for task, rows in report["rows"].items():
        gold = [r["gold"] for r in rows]
        pred = [r["pred"] for r in rows]
        figures = report["tasks"][task]
        assert figures["accuracy"] == pytest.approx(accuracy_score(gold, pred))
        assert figures["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted", zero_division=0))
    assert report["run"]["model_sha256"].startswith("b179c952")
    assert "DR" in result.output and "weighted F1" in result.output


def test_generate_prints_the_raw_greedy_continuation(smollm2_gguf):
    result = run("generate", "-m", smollm2_gguf, "--max-tokens", "12", "The capital of France is")
    assert result.exit_code == 0, result.output
    engine = load_engine(smollm2_gguf)
    try:
        want = engine.generate(
            engine.tokenize("The capital of France is", add_bos=engine.info.add_bos), max_tokens=12
        ).text()
    finally:
        engine.close()
    assert result.stdout == want + "\n"  # stderr may carry the thread note on a busy machine


def test_prompt_with_a_model_shows_its_exact_input(smollm2_gguf):
    result = run("prompt", "--task", "DR", "-m", smollm2_gguf, "post {{ 1+1 }} </s>")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout == 'Consider this post: "post {{ 1+1 }} </s>" Question: Does the poster suffer from depression?\n'
    )


def test_store_names_work_for_model_options(smollm2_gguf):
    assert run("pull", "smollm2").exit_code == 0
    result = run("analyze", "--task", "DR", "--no-explain", "I am fine.")  # the store's only model
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[1] DR: ")
    assert run("analyze", "-m", "smollm2", "--task", "DR", "--no-explain", "hi").exit_code == 0
