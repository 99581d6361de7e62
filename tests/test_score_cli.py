"""`mental-edge score`, `eval --explain --scorer`, `compare` and `report` with explanation scores, end to end: real
SmolLM2 explanations of a few IMHI rows scored by a tiny BART, the figures checked against transformers, rouge-score,
sacrebleu and numpy resampling computed here; bad input as one line with nothing written."""

import csv
import json
import shutil

import numpy as np
import pytest
import sacrebleu
import torch
from mental_edge.convert import convert_checkpoint
from rouge_score import rouge_scorer
from support.cli import one_error_line, run
from support.seq2seq_tiny import write_bart
from test_report_html import CHROMIUM, FIGURE_SIZES, Browser
from transformers import BartForConditionalGeneration, BartTokenizer

import mental_edge

pytestmark = pytest.mark.slow  # torch (the reference), and SmolLM2
ROWS = 3
TOLERANCE = 1e-4  # BARTScore, CTranslate2 float32 against transformers (tests/test_bart_score.py)


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory, imhi_dir):
    return write_bart(tmp_path_factory.mktemp("bart") / "tiny-bart", imhi_dir, positions=1024)


@pytest.fixture(scope="module")
def scorer(bart_dir, tmp_path_factory):
    return convert_checkpoint(bart_dir, tmp_path_factory.mktemp("scorer") / "tiny-scorer", outtype="f32")


@pytest.fixture(scope="module")
def data(imhi_dir, tmp_path_factory):
    """IMHI's layout in small: test_instruction/ with DR and CAMS rows (CAMS rows whose posts the expert set also
    explains), and expert/ beside it."""
    root = tmp_path_factory.mktemp("imhi")
    (root / "test_instruction").mkdir()
    shutil.copytree(imhi_dir / "expert", root / "expert")
    expert_posts = {row["query"] for row in _rows(imhi_dir / "expert" / "CAMS.csv")}
    for task in ("DR", "CAMS"):
        rows = _rows(imhi_dir / "test_instruction" / f"{task}.csv")
        chosen = [r for r in rows if r["query"] in expert_posts][:ROWS] if task == "CAMS" else rows[:ROWS]
        with open(root / "test_instruction" / f"{task}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["query", "gpt-3.5-turbo"])
            writer.writeheader()
            writer.writerows(chosen)
    return root


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _reference(answer: str) -> str:
    return answer.split("Reasoning:", 1)[1].strip()


def _bartscore(bart_dir, candidate: str, reference: str) -> float:
    tokenizer = BartTokenizer.from_pretrained(bart_dir)
    model = BartForConditionalGeneration.from_pretrained(bart_dir).eval()
    src = tokenizer([candidate], max_length=1024, truncation=True, return_tensors="pt")
    tgt = tokenizer([reference], max_length=1024, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=src["input_ids"], attention_mask=src["attention_mask"], labels=tgt).logits
    return float(torch.log_softmax(logits, -1)[0].gather(1, tgt[0][:, None]).mean())


@pytest.fixture(scope="module")
def evals(smollm2_gguf, data, scorer, tmp_path_factory):
    """Two eval runs with explanations (a shorter and a longer budget), each scored by the tiny BART."""
    out = tmp_path_factory.mktemp("evals")
    stems = {}
    for name, budget in (("short", 8), ("long", 24)):
        stem = out / name
        result = run("eval", "--data", data / "test_instruction", "-m", smollm2_gguf, "--explain", "--max-tokens",
                     budget, "--scorer", scorer, "--report", stem, "--threads", 2)  # fmt: skip
        assert result.exit_code == 0, result.output
        stems[name] = stem
    return stems


def test_eval_reports_explanation_scores_per_task_with_intervals(evals, data, bart_dir):
    report = json.loads(evals["long"].with_suffix(".json").read_text())
    part = report["explanations"]
    assert set(part["tasks"]) == {"DR", "CAMS"} and set(part["tasks"]["CAMS"]) == {"gold", "expert"}
    assert part["tasks"]["CAMS"]["expert"]["rows"] == ROWS  # rows chosen among the expert set's posts
    rows = part["rows"]["DR"]
    assert len(rows) == ROWS
    summary = part["tasks"]["DR"]["gold"]
    for metric in ("bart_score", "rouge1", "rouge2", "rougeL"):
        assert summary[metric]["estimate"] == pytest.approx(np.mean([r[metric] for r in rows]))
        assert summary[metric]["low"] <= summary[metric]["estimate"] <= summary[metric]["high"]
    md = evals["long"].with_suffix(".md").read_text()
    assert "Explanations against the gold references" in md and "Explanations against the expert references" in md
    assert "BARTScore [95%]" in md


def test_score_on_analyze_records_equals_the_reference_computations(smollm2_gguf, data, scorer, bart_dir, tmp_path):
    records = tmp_path / "run.jsonl"
    result = run("analyze", "-m", smollm2_gguf, "-i", data / "test_instruction" / "DR.csv", "--max-tokens", 16,
                 "-o", records, "--threads", 2)  # fmt: skip
    assert result.exit_code == 0, result.output
    stem = tmp_path / "scores"
    result = run("score", records, "--data", data / "test_instruction" / "DR.csv", "--scorer", scorer, "-o", stem,
                 "--resamples", 200, "--seed", 5)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all((tmp_path / f"scores.{ext}").is_file() for ext in ("json", "md", "html"))
    part = json.loads((tmp_path / "scores.json").read_text())["explanations"]
    assert part["reference_sets"]["expert"] is not None  # expert/ lies beside the data's folder
    recs = [json.loads(line) for line in records.read_text().splitlines()]
    refs = [_reference(r["gpt-3.5-turbo"]) for r in _rows(data / "test_instruction" / "DR.csv")]
    cands = [(r["explanation"] or "").strip() for r in recs]
    rows = part["rows"]["DR"]
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for row, cand, ref in zip(rows, cands, refs):
        assert row["bart_score"] == pytest.approx(_bartscore(bart_dir, cand, ref), abs=TOLERANCE)
        assert row["rougeL"] == pytest.approx(rouge.score(ref, cand)["rougeL"].fmeasure)
    summary = part["tasks"]["DR"]["gold"]
    assert summary["bleu"]["estimate"] == pytest.approx(sacrebleu.corpus_bleu(cands, [refs]).score)
    idx = np.random.default_rng(5).integers(0, ROWS, size=(200, ROWS))
    means = np.array([r["bart_score"] for r in rows])[idx].mean(axis=1)
    assert (summary["bart_score"]["low"], summary["bart_score"]["high"]) == pytest.approx(
        tuple(np.percentile(means, [2.5, 97.5]))
    )
    api = mental_edge.score_explanations(
        records, data / "test_instruction" / "DR.csv", scorer, resamples=200, seed=5
    )  # the library the command calls, with the same figures
    assert api.data["explanations"]["tasks"] == part["tasks"] and api.table() in result.output


def test_compare_and_report_show_explanation_deltas_with_paired_intervals(evals, tmp_path):
    short, long = (evals[k].with_suffix(".json") for k in ("short", "long"))
    result = run("compare", short, long)
    assert result.exit_code == 0, result.output
    assert "Explanation scores, paired bootstrap" in result.output and "BARTScore Δ [95%]" in result.output
    a, b = (json.loads(p.read_text())["explanations"]["rows"]["DR"] for p in (short, long))
    delta = np.mean([y["rouge1"] for y in b]) - np.mean([x["rouge1"] for x in a])
    line = next(x for x in result.output.splitlines()[::-1] if x.startswith("DR "))
    assert f"{delta:+.4f}" in line  # ROUGE-1's delta, after BARTScore's
    same = run("compare", long, long)
    line = next(x for x in same.output.splitlines()[::-1] if x.startswith("DR "))
    assert line.count("+0.0000 [+0.0000, +0.0000]") == 5


def test_the_compared_page_renders_every_score_figure_in_chromium(evals, tmp_path):
    page = tmp_path / "compare.html"
    result = run("report", evals["short"].with_suffix(".json"), evals["long"].with_suffix(".json"), "-o", page)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "Explanation scores (against the gold references)" in html and "Δ BARTScore" in html
    if not shutil.which(CHROMIUM) and not __import__("pathlib").Path(CHROMIUM).exists():
        pytest.fail("headless Chromium is missing: apt-get install -y chromium (.ci/run installs it)")
    profile = tmp_path / "profile"
    profile.mkdir()
    browser = Browser(profile)
    try:
        browser.open(page)
        sizes = json.loads(browser.value(FIGURE_SIZES))
        names = [name for name, _, _ in sizes]
        assert names.count("explanation score distribution") == 4  # 2 runs x 2 tasks
        assert {"DR explanation score distribution", "CAMS explanation score distribution"} <= set(names)
        assert all(width > 50 and height > 50 for _, width, height in sizes), sizes
        assert browser.errors() == []
    finally:
        browser.close()


def test_a_checkpoint_folder_as_scorer_is_converted_once_and_cached(bart_dir, data, scorer, tmp_path, isolated_home):
    records = _records(tmp_path / "r.jsonl", data, explanation="The post is about work and stress.")
    first = run("score", records, "--data", data / "test_instruction", "--scorer", bart_dir, "-o", tmp_path / "a")
    assert first.exit_code == 0 and "converting the scorer" in first.output, first.output
    again = run("score", records, "--data", data / "test_instruction", "--scorer", bart_dir, "-o", tmp_path / "b")
    assert again.exit_code == 0 and "converting the scorer" not in again.output
    assert len(list((isolated_home / "scorers").iterdir())) == 1
    by_folder = run("score", records, "--data", data / "test_instruction", "--scorer", scorer, "-o", tmp_path / "c")
    assert by_folder.exit_code == 0
    scores = [json.loads((tmp_path / f"{s}.json").read_text())["explanations"]["rows"] for s in "abc"]
    assert scores[0] == scores[1] == scores[2]


def test_a_converted_scorer_imported_into_the_store_is_found_by_name(data, scorer, tmp_path):
    assert run("import", scorer, "--name", "bart-score").exit_code == 0
    records = _records(tmp_path / "r.jsonl", data, explanation="work")
    result = run("score", records, "--data", data / "test_instruction", "--scorer", "bart-score", "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output


def _records(path, data, explanation, ids=None, tasks=("DR",)):
    with path.open("w") as fh:
        for task in tasks:
            for i in ids or range(1, ROWS + 1):
                record = {"id": str(i), "task": task, "label": None, "probabilities": None,
                          "explanation": explanation, "gold": None, "flags": [], "run": {}}  # fmt: skip
                fh.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(
    "case, words",
    [
        ("no explanations", ["r.jsonl", "no record has an explanation"]),
        ("missing rows", ["row 9 of task DR is not in"]),
        ("checkpoint not BART", ["not a BartForConditionalGeneration checkpoint", "LlamaForCausalLM"]),
        ("folder not a scorer", ["not a converted BART scorer"]),
        ("gguf file", ["not a BART scorer"]),
        ("not records", ["r.jsonl", "not JSON"]),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(case, words, data, scorer, smollm2_gguf, tmp_path):
    records, use = tmp_path / "r.jsonl", scorer
    _records(records, data, explanation=None if case == "no explanations" else "an explanation",
             ids=[1, 9] if case == "missing rows" else None)  # fmt: skip
    if case == "checkpoint not BART":
        use = tmp_path / "llama"
        use.mkdir()
        (use / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
        (use / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    elif case == "folder not a scorer":
        use = tmp_path / "folder"
        use.mkdir()
        (use / "model.bin").write_bytes(b"")
    elif case == "gguf file":
        use = smollm2_gguf
    elif case == "not records":
        records.write_text("this is not json\n")
    result = run("score", records, "--data", data / "test_instruction", "--scorer", use, "-o", tmp_path / "out")
    one_error_line(result, *words)
    assert not list(tmp_path.glob("out*"))


def test_pull_bart_large_cnn_gives_a_scorer_the_store_knows_by_name(monkeypatch, bart_dir, data, scorer, tmp_path):
    """`pull bart-large-cnn` against the stand-in hub serving the real repo's file list with the tiny weights:
    only the safetensors and side files are fetched, and the stored float32 scorer scores as a local conversion."""
    from support import real_repos
    from test_pull_real_repos import pull_from

    from mental_edge import store

    files = real_repos.bart_large_cnn(bart_dir)
    result, server = pull_from(monkeypatch, {"facebook/bart-large-cnn": files}, "bart-large-cnn")
    assert result.exit_code == 0, result.output
    fetched = server.served("facebook/bart-large-cnn")
    assert "model.safetensors" in fetched and not fetched & {"pytorch_model.bin", "tf_model.h5", "rust_model.ot"}
    assert store.find_model("bart-large-cnn").name == "bart-large-cnn-f32"
    records = _records(tmp_path / "r.jsonl", data, explanation="The poster mentions feeling low at work.")
    for name, use in (("pulled", "bart-large-cnn"), ("local", scorer)):
        result = run("score", records, "--data", data / "test_instruction", "--scorer", use, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
    pulled, local = (json.loads((tmp_path / f"{n}.json").read_text())["explanations"] for n in ("pulled", "local"))
    assert pulled["rows"] == local["rows"]


def test_int8_scoring_is_said_in_the_report_and_stays_near_float32(data, scorer, tmp_path):
    records = _records(tmp_path / "r.jsonl", data, explanation="The poster describes stress at work and sleep.")
    for name, extra in (("f32", []), ("int8", ["--scorer-compute", "int8"])):
        result = run("score", records, "--data", data / "test_instruction", "--scorer", scorer, "-o", tmp_path / name,
                     *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
    f32, int8 = (json.loads((tmp_path / f"{n}.json").read_text())["explanations"] for n in ("f32", "int8"))
    assert (f32["scorer"]["compute_type"], int8["scorer"]["compute_type"]) == ("float32", "int8_float32")
    a, b = (np.array([r["bart_score"] for r in p["rows"]["DR"]]) for p in (f32, int8))
    assert 0 < np.max(np.abs(a - b)) < 0.05  # nats per token, on the tiny model
    assert [r["rougeL"] for r in f32["rows"]["DR"]] == [r["rougeL"] for r in int8["rows"]["DR"]]
