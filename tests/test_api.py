"""The Python API on the fast tier's FakeEngine: the shapes posts come in, records equal to the CLI's, tasks
defined in code, bad input in one line, interrupts and threads. The real model's cases are in
test_api_real_model.py."""

from __future__ import annotations

import json
import threading

import pandas
import pytest
from support.cli import run
from support.fake_engine import FakeEngine, expected

import mental_edge
from mental_edge import MentalEdgeError, Model, Record, define_task, records_to_frame

POSTS = ["I can't sleep and nothing feels worth doing.", "Had a lovely walk with my sister today."]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF fake model\n")  # hashed into every record's run
    with Model(FakeEngine(path)) as m:
        yield m


def test_a_list_gets_the_cli_ids_and_records_equal_to_the_cli_ones(fake_models, tmp_path):
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(POSTS) + "\n")
    out = tmp_path / "out.jsonl"
    assert run("analyze", "-m", fake_models.path, "-t", "DR", "-t", "dreaddit", "-i", posts, "-o", out).exit_code == 0
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    with mental_edge.load(fake_models.path) as m:
        records = m.analyze(POSTS, tasks=["DR", "dreaddit"])
    assert [r.to_dict() for r in records] == cli
    assert [(r.id, r.task) for r in records] == [("1", "DR"), ("1", "dreaddit"), ("2", "DR"), ("2", "dreaddit")]


def test_one_string_pairs_mappings_and_a_series_keep_their_ids(model):
    one = model.analyze(POSTS[0])
    assert [(r.id, r.task) for r in one] == [("1", "DR")]
    label, probabilities = expected(POSTS[0], model.taskset.task("DR"))
    assert one[0].label == label and one[0].probabilities == pytest.approx(probabilities)
    assert [r.id for r in model.analyze([("a7", POSTS[0]), ("b9", POSTS[1])])] == ["a7", "b9"]
    assert [r.id for r in model.analyze({"x": POSTS[0], 12: POSTS[1]})] == ["x", "12"]
    series = pandas.Series(POSTS, index=[101, 205])
    records = model.analyze(series, explain=False)
    assert [r.id for r in records] == ["101", "205"] and all(r.explanation is None for r in records)
    assert [r.label for r in records] == [r.label for r in model.analyze(POSTS, explain=False)]


def test_an_iterable_is_read_as_the_analysis_goes(model):
    seen = []

    def posts():
        for post in POSTS:
            seen.append(post)
            yield post

    records = model.iter_analyze(posts())
    first = next(records)
    assert first.id == "1" and len(seen) <= 2
    assert [r.id for r in records] == ["2"]


def test_records_to_a_data_frame_with_a_column_per_label(model):
    frame = records_to_frame(model.analyze(POSTS, tasks="DR"))
    assert list(frame["id"]) == ["1", "2"] and list(frame["task"]) == ["DR", "DR"]
    assert {"p(yes)", "p(no)", "explanation", "model"} <= set(frame.columns)
    assert (frame["p(yes)"] + frame["p(no)"]).round(6).eq(1.0).all()


def test_a_task_defined_in_code_runs_and_a_bad_one_is_one_line(model):
    task = define_task(
        "tiredness",
        ["no", "yes"],
        'Post: "{{ post }}" Question: {{ question }}',
        question="Is the poster tired?",
        answers={"yes": "Yes, the poster is tired.", "no": "No, the poster is not tired."},
    )
    (record,) = model.analyze(POSTS[0], tasks=task, explain=False)
    assert record.task == "tiredness" and record.label in ("yes", "no")
    assert set(record.probabilities) == {"yes", "no"}
    with pytest.raises(MentalEdgeError, match="field 'labels'"):
        define_task("odd", [], "{{ post }}")
    with pytest.raises(MentalEdgeError, match="line 1"):
        define_task("broken", ["a", "b"], "{{ post ")
    assert "DR" in [t.name for t in mental_edge.tasks()] and task not in mental_edge.tasks()


def test_bad_input_is_one_error_naming_the_position(model):
    assert model.analyze([]) == [] and model.analyze({}) == []
    with pytest.raises(MentalEdgeError, match=r"post 2 \(id '2'\): expected a string, got int"):
        model.analyze([POSTS[0], 7])
    with pytest.raises(MentalEdgeError, match=r"post 'b': expected a string, got int"):
        model.analyze(pandas.Series([POSTS[0], 3], index=["a", "b"], dtype=object))
    with pytest.raises(MentalEdgeError, match="unknown task 'nope'; known tasks: all, .*DR"):
        model.analyze(POSTS, tasks="nope")
    with pytest.raises(MentalEdgeError, match="posts: expected a string"):
        model.analyze(42)
    (flagged,) = model.analyze("   ")
    assert flagged.label is None and flagged.flags == ["empty"]


def test_a_path_that_is_no_model_is_one_line(tmp_path):
    with pytest.raises(MentalEdgeError, match="missing.gguf' is neither a file nor a store name"):
        mental_edge.load(tmp_path / "missing.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model at all")
    with pytest.raises(MentalEdgeError, match="notes.gguf"):
        mental_edge.load(text)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(MentalEdgeError, match="not a model"):
        mental_edge.load(folder)


def test_an_interrupt_returns_nothing_and_the_next_call_equals_a_fresh_models(model):
    fresh = model.analyze(POSTS, tasks=["DR", "dreaddit"])
    model.engine.fail_after = model.engine.requests + 3  # Ctrl-C in the middle of the next run
    with pytest.raises(KeyboardInterrupt):
        model.analyze(POSTS, tasks=["DR", "dreaddit"])
    assert model.engine.resets == 1
    model.engine.fail_after = None
    assert model.analyze(POSTS, tasks=["DR", "dreaddit"]) == fresh


def test_a_second_thread_waits_and_a_call_inside_a_call_is_refused(model):
    alone = model.analyze(POSTS * 3)
    results: dict[int, list[Record]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, model.analyze(POSTS * 3))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == alone for i in range(3))
    running = model.iter_analyze(POSTS)
    next(running)
    with pytest.raises(MentalEdgeError, match="still inside another call in this thread"):
        model.analyze(POSTS)
    running.close()  # the first call given up: the model serves the next one
    assert model.analyze(POSTS) == model.analyze(POSTS)


def test_generate_chat_and_prompt(model):
    text = model.generate("Once upon a time", max_tokens=8)
    assert isinstance(text, str) and text == "".join(model.generate("Once upon a time", max_tokens=8, stream=True))
    answer = model.chat([{"role": "user", "content": "Hello there"}], max_tokens=8)
    assert isinstance(answer, str)
    prompt = model.prompt("DR", POSTS[0])
    assert POSTS[0] in prompt and "Does the poster suffer from depression?" in prompt


def test_a_closed_model_says_so(model):
    model.close()
    model.close()  # twice is fine
    with pytest.raises(MentalEdgeError, match="closed"):
        model.analyze(POSTS)


def test_no_public_name_is_also_a_submodule_name():
    """`import mental_edge.x` sets the package's attribute `x` to that module, so a public function named like a
    submodule would turn into the module once anything imports it (as `verify` and `tasks` once did)."""
    import importlib
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(mental_edge.__path__)}
    assert submodules & set(mental_edge.__all__) == set()
    importlib.import_module("mental_edge.verification")  # the package that used to shadow verify()
    assert callable(mental_edge.verify) and callable(mental_edge.tasks)
