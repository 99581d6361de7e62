"""The runner and the analyzer on FakeEngine (fast tier): batched runs in input order, resume's `done` set,
limits, IMHI rows, streaming, and the encoder-decoder path.

Expected labels come from the fake model's definition (`text_logprob`), as in test_cli_commands.py.
"""

import pytest
from support.fake_engine import EOS, FakeEngine, expected, expected_explanation, text_logprob
from test_cli_commands import POSTS

from mental_edge.analysis import Analyzer
from mental_edge.analysis.runner import run_analysis, work_left
from mental_edge.io.readers import InputRow
from mental_edge.prompting import load_tasks

TASKS = load_tasks()
DR, SAD = TASKS.task("DR"), TASKS.task("SAD")


def rows(posts):
    return [InputRow(str(i), post, "test", i) for i, post in enumerate(posts, 1)]


def engine(tmp_path, **options) -> FakeEngine:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"fake")
    return FakeEngine(path, **options)


def records(analyzer, rows_, tasks, **kwargs):
    out = []
    summary = run_analysis(analyzer, rows_, tasks, write=out.append, **kwargs)
    return out, summary


def test_a_batched_run_gives_the_sequential_records_in_input_order(tmp_path):
    posts = [f"{post} ({i})" for i, post in enumerate(POSTS * 3)]
    batched_engine = engine(tmp_path, slots=4)
    batched, summary = records(Analyzer(batched_engine, max_tokens=16), rows(posts), [DR, SAD])
    sequential, _ = records(Analyzer(engine(tmp_path, slots=1), max_tokens=16), rows(posts), [DR, SAD])
    scored = [next(i for i, post in enumerate(posts) if f'"{post}"' in text) for kind, text, _ in batched_engine.calls]
    assert batched_engine.peak_in_flight == 4 and scored != sorted(scored)  # finished last-in first-out
    strip = [{k: v for k, v in r.items() if k != "run"} for r in batched]
    assert strip == [{k: v for k, v in r.items() if k != "run"} for r in sequential]
    assert [(r["id"], r["task"]) for r in batched] == [(str(i), t) for i in range(1, 16) for t in ("DR", "SAD")]
    assert summary.rows == 15 and summary.records == 30 and summary.flagged == 0 and summary.skipped == 0
    for record, post in zip(batched[::2], posts):
        assert record["label"] == expected(post, DR)[0]
        assert record["explanation"] == expected_explanation(post, record["label"], DR, max_tokens=16)
    assert batched[0]["run"]["slots"] == 4 and sequential[0]["run"]["slots"] == 1


def test_done_records_are_skipped_and_counted_and_limit_stops_the_rows(tmp_path):
    fake = engine(tmp_path)
    done = {("1", "DR"), ("2", "DR"), ("2", "SAD")}
    out, summary = records(Analyzer(fake, explain=False), rows(POSTS), [DR, SAD], done=done, limit=4)
    assert [(r["id"], r["task"]) for r in out] == [("1", "SAD"), ("3", "DR"), ("3", "SAD"), ("4", "DR"), ("4", "SAD")]
    assert summary.rows == 4 and summary.skipped == 3 and summary.records == 5
    assert len(fake.calls) == 5 and not any(POSTS[1] in text for _, text, _ in fake.calls)
    assert work_left(rows(POSTS)[1], [DR, SAD], done=done) == (False, 2)
    assert work_left(rows(POSTS)[0], [DR, SAD], done=done) == (True, 1)


def test_imhi_rows_take_their_task_and_gold_and_an_unknown_query_is_one_flagged_record(tmp_path):
    sad_query = SAD.render("Work is too much and my boss yells.", "instruction")
    imhi = [
        InputRow("1", sad_query, "imhi.csv", 1, gold="This post shows the stress cause related to work. Reasoning: x"),
        InputRow("2", "What is the weather like?", "imhi.csv", 2, gold="Sunny."),
        InputRow("3", None, "imhi.csv", 3, flag="empty"),
    ]
    out, summary = records(Analyzer(engine(tmp_path), explain=False), imhi, [], taskset=TASKS)
    assert [(r["id"], r["task"], r["flags"]) for r in out] == [
        ("1", "SAD", []),
        ("2", "-", ["not an IMHI query of a known task"]),
        ("3", "-", ["empty"]),
    ]
    label, probabilities = expected("Work is too much and my boss yells.", SAD)
    assert out[0]["label"] == label and out[0]["probabilities"] == pytest.approx(probabilities, abs=1e-9)
    assert out[0]["gold"] == "work" and summary.flagged == 2
    filtered, _ = records(Analyzer(engine(tmp_path), explain=False), imhi[:1], [DR], taskset=TASKS)
    assert filtered == []  # a SAD row when only DR is asked for


def test_analyze_streams_each_explanation_as_it_is_generated(tmp_path):
    pieces = []
    analyzer = Analyzer(engine(tmp_path), max_tokens=24)
    results = analyzer.analyze(POSTS[0], [DR, SAD], on_text=lambda task, piece: pieces.append((task, piece)))
    assert [r.task for r in results] == ["DR", "SAD"]
    for result in results:
        streamed = "".join(piece for task, piece in pieces if task == result.task)
        assert streamed.strip() == result.explanation and result.explanation
        assert result.label == expected(POSTS[0], TASKS.task(result.task))[0]


def test_an_encoder_decoder_model_reads_the_framed_completion_query_and_scores_answers_as_its_output(tmp_path):
    fake = engine(tmp_path, architecture="t5")
    (record,), _ = records(Analyzer(fake, max_tokens=8), rows(POSTS[:1]), [DR])
    form = "completion"  # what MentalT5 was trained on
    query = DR.render(POSTS[0], form)
    source = "\x02encoder\x02" + query + "\x01</s>\x01" + "\x02decoder\x02"  # T5's encoder input ends with </s>
    scores = {label: text_logprob(source, DR.answer(label, form)) for label in DR.labels}
    assert record["label"] == max(scores, key=scores.get) and record["template_sha256"] == DR.template_hash(form)
    kind, text, tokens = fake.calls[0]
    assert kind == "score" and text == query and tokens[-1] == EOS
    assert fake.calls[1][0] == "generate" and fake.calls[1][2] == tokens  # the explanation: same encoder input
    assert record["explanation"] and record["run"]["architecture"] == "t5"
