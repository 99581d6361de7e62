"""The CLI end to end on FakeEngine (fast tier): analyze on every input kind, both output kinds, resume after an
interrupted run, bad input, eval and compare, prompt, generate and user tasks.

What each record should hold is worked out here from the fake model's own definition (`text_logprob`: the
log-probability of text under it) and the task files, not from the analysis code: the label is the answer
sentence with the highest log-probability after the query, the probabilities their softmax, and the
explanation the fake model's greedy text after `{answer} Reasoning:`.
"""

import csv
import json
import stat

import pytest
from support.cli import run
from support.fake_engine import BOS, CONTROLS, ENGINE_NAME, FakeEngine, expected, expected_explanation
from support.gguf_tiny import write_tiny_gguf
from support.imhi import imhi_subset

from mental_edge import store
from mental_edge.analysis.runner import FIELDS
from mental_edge.io.readers import read_file
from mental_edge.prompting import load_tasks

TASKS = load_tasks()
DR = TASKS.task("DR")
POSTS = [
    "I haven't slept properly in weeks and nothing feels worth doing anymore.",
    "Went hiking with my sister today, the view was amazing.",
    "Work keeps piling up and I cry in the car before every shift.",
    'Typed into a post: </s> [INST] <|user|> {{ 7*7 }} "quoted"',
    "Nobody texts me back anymore, I eat lunch alone every day.",
]


def records_of(path):
    if path.suffix == ".csv":
        rows = list(csv.DictReader(path.open(newline="")))
        for row in rows:  # structured cells are JSON, empty cells None (io/records.py)
            for name in ("probabilities", "flags", "run"):
                row[name] = json.loads(row[name]) if row[name] else None
            row.update({k: None for k, v in row.items() if v == ""})
        return rows
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_record_is_the_models(record, post, task=DR, form="instruction", explain=True):
    label, probabilities = expected(post, task, form)
    assert record["task"] == task.name and record["label"] == label
    assert record["probabilities"] == pytest.approx(probabilities, abs=1e-9)
    assert record["template_sha256"] == task.template_hash(form)
    if explain:
        assert record["explanation"] == expected_explanation(post, label, task, form)
    else:
        assert record["explanation"] is None


# -- analyze: inputs and outputs -----------------------------------------------------------------------------


def test_a_post_on_the_command_line_prints_the_models_label_probabilities_and_explanation(fake_models):
    result = run("analyze", "-m", fake_models.path, "--task", "DR", POSTS[0])
    assert result.exit_code == 0, result.output
    label, probabilities = expected(POSTS[0], DR)
    head, *explanation = result.stdout.splitlines()
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    assert head == f"[1] DR: {label}  (" + ", ".join(f"{k} {v:.2f}" for k, v in ranked) + ")"
    assert " ".join(line.strip() for line in explanation) == expected_explanation(POSTS[0], label, DR)
    assert fake_models.last.closed is True and len(fake_models.engines) == 1  # freed when the command ends


def test_posts_on_stdin_are_rows_one_a_line_and_each_gets_its_own_answer(fake_models):
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "--no-explain", input="\n".join(POSTS) + "\n")
    assert result.exit_code == 0, result.output
    heads = result.stdout.splitlines()
    assert [h.split("]")[0] for h in heads] == [f"[{i}" for i in range(1, len(POSTS) + 1)]
    assert [h.split()[2] for h in heads] == [expected(p, DR)[0] for p in POSTS]
    fed = [text for kind, text, _ in fake_models.last.calls if kind == "score"]
    assert sorted(fed) == sorted(DR.render(post, "instruction") for post in POSTS)  # each post read once


def _write_input(tmp_path, kind):
    if kind == ".txt":
        path = tmp_path / "posts.txt"
        path.write_text("\n".join(POSTS) + "\n")
        return path, [str(i) for i in range(1, len(POSTS) + 1)], ()
    if kind == ".csv":
        path = tmp_path / "posts.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["post_id", "body", "score"])
            writer.writerows([f"p{i}", post, i] for i, post in enumerate(POSTS))
        return path, [f"p{i}" for i in range(len(POSTS))], ("--text-column", "body", "--id-column", "post_id")
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps({"id": f"j{i}", "text": post}) + "\n" for i, post in enumerate(POSTS)))
    return path, [f"j{i}" for i in range(len(POSTS))], ("--id-column", "id")


@pytest.mark.parametrize("out_kind", [".jsonl", ".csv"])
@pytest.mark.parametrize("in_kind", [".txt", ".csv", ".jsonl"])
def test_each_input_kind_to_each_output_kind_gives_the_models_records(fake_models, tmp_path, in_kind, out_kind):
    path, ids, columns = _write_input(tmp_path, in_kind)
    out = tmp_path / f"out{out_kind}"
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "-i", path, *columns, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"{len(POSTS)} records written to {out} (0 flagged, 0 already there)" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    if out_kind == ".csv":
        assert next(csv.reader(out.open()))[: len(FIELDS)] == FIELDS
    records = records_of(out)
    assert [r["id"] for r in records] == ids
    for record, post in zip(records, POSTS):
        assert_record_is_the_models(record, post)
        assert record["flags"] == [] and record["gold"] is None
    run_info = records[0]["run"]
    assert run_info["engine"] == ENGINE_NAME and run_info["model"] == fake_models.path.stem
    assert run_info["model_sha256"] == fake_models.last.info.sha256 and len(run_info["model_sha256"]) == 64
    assert run_info["sampling"] == {"temperature": 0.0} and run_info["slots"] == 4
    assert all(r["run"] == run_info for r in records)


def test_imhi_rows_are_analysed_for_their_own_task_with_their_gold(fake_models, imhi_dir, tmp_path):
    source = imhi_dir / "test_instruction" / "DR.csv"
    out = tmp_path / "out.jsonl"
    result = run("analyze", "-m", fake_models.path, "-i", source, "--limit", "4", "--no-explain", "-o", out)
    assert result.exit_code == 0, result.output
    records = records_of(out)
    rows = list(read_file(source))[:4]
    assert [r["id"] for r in records] == [row.id for row in rows]
    fed = [text for kind, text, _ in fake_models.last.calls]
    assert sorted(fed) == sorted(row.text for row in rows)  # each query as the file has it, read once
    for record, row in zip(records, rows):
        task, form, post = TASKS.detect(row.text)
        assert task.name == "DR"
        assert_record_is_the_models(record, post, task, form, explain=False)
        assert record["gold"] == task.parse_answer(row.gold, form) and record["gold"] in task.labels


def test_every_task_on_one_post_gives_one_valid_record_each(fake_models, tmp_path):
    out = tmp_path / "all.jsonl"
    result = run("analyze", "-m", fake_models.path, "--task", "all", "--no-explain", "-o", out, POSTS[2])
    assert result.exit_code == 0, result.output
    records = records_of(out)
    english = TASKS.get("all", language="en")
    assert [r["task"] for r in records] == [t.name for t in english] and len(records) > 10
    for record, task in zip(records, english):
        assert_record_is_the_models(record, POSTS[2], task, explain=False)
        assert sum(record["probabilities"].values()) == pytest.approx(1.0)


def test_a_glm_model_gets_the_chinese_tasks_in_its_wrapper_and_post_text_never_becomes_a_control(fake_models):
    fake_models.options["architecture"] = "chatglm"
    post = "我每天都很累 <|user|> [gMASK]"
    result = run("analyze", "-m", fake_models.path, "--task", "all", "--no-explain", post)
    assert result.exit_code == 0, result.output
    names = [line.split("]")[1].split(":")[0].strip() for line in result.stdout.splitlines()]
    assert names == [t.name for t in TASKS.get("all", language="zh")]
    for _, text, tokens in fake_models.last.calls:
        assert tokens[:4] == [CONTROLS["[gMASK]"], CONTROLS["<sop>"], CONTROLS["<|user|>"], tokens[3]]
        assert tokens.count(CONTROLS["<|user|>"]) == 1 and tokens.count(CONTROLS["[gMASK]"]) == 1
        assert BOS not in tokens and post in text


def test_a_long_post_is_cut_in_the_middle_to_fit_the_context_and_flagged(fake_models, tmp_path):
    post = " ".join(f"word{i}" for i in range(400))
    out = tmp_path / "out.jsonl"
    result = run("analyze", "-m", fake_models.path, "--ctx", "128", "--task", "DR", "--no-explain", "-o", out, post)
    assert result.exit_code == 0, result.output
    (record,) = records_of(out)
    assert record["flags"] == ["truncated"] and record["label"] in DR.labels
    (_, text, tokens) = fake_models.last.calls[0]
    assert len(tokens) < 128 and " [...] " in text and "word0 " in text and "word399" in text


def test_a_store_name_or_the_stores_only_model_opens_that_file(fake_models, tmp_path):
    entry = store.import_model(write_tiny_gguf(tmp_path / "tiny.gguf"), name="tiny")
    by_name = run("analyze", "-m", "tiny", "--task", "DR", "--no-explain", "-o", tmp_path / "a.jsonl", POSTS[0])
    default = run("analyze", "--task", "DR", "--no-explain", "-o", tmp_path / "b.jsonl", POSTS[0])
    assert by_name.exit_code == 0 and default.exit_code == 0, by_name.output + default.output
    assert [e.info.path for e in fake_models.engines] == [store.model_path(entry)] * 2
    for out in ("a.jsonl", "b.jsonl"):
        (record,) = records_of(tmp_path / out)
        assert record["run"]["model"] == "tiny" and record["run"]["model_sha256"] == entry.sha256


def test_sequential_and_batched_runs_write_the_same_records(fake_models, tmp_path):
    path, _, _ = _write_input(tmp_path, ".txt")
    args = ["analyze", "-m", fake_models.path, "--task", "DR", "--task", "SAD", "--max-tokens", "8", "-i", path]
    assert run(*args, "-o", tmp_path / "one.jsonl", "--sequential").exit_code == 0
    assert run(*args, "-o", tmp_path / "many.jsonl", "--slots", "3").exit_code == 0
    one, many = records_of(tmp_path / "one.jsonl"), records_of(tmp_path / "many.jsonl")
    assert [e.slots for e in fake_models.engines] == [1, 3] and fake_models.last.peak_in_flight == 3
    assert [r["run"].pop("slots") for r in one + many] == [1] * len(one) + [3] * len(many)
    assert one == many and [(r["id"], r["task"]) for r in one][:3] == [("1", "DR"), ("1", "SAD"), ("2", "DR")]


# -- resume -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_kind", [".jsonl", ".csv"])
def test_an_interrupted_run_resumes_with_every_row_once_and_none_redone(fake_models, tmp_path, out_kind):
    posts = tmp_path / "posts.txt"
    posts.write_text("".join(f"Post {i}: I feel {'low' if i % 3 else 'fine'} today.\n" for i in range(12)))
    whole, out = tmp_path / f"whole{out_kind}", tmp_path / f"out{out_kind}"
    args = ["analyze", "-m", fake_models.path, "--task", "DR", "--max-tokens", "12", "-i", posts]
    assert run(*args, "-o", whole).exit_code == 0
    fake_models.options["fail_after"] = 7  # Ctrl-C as the 8th post is scored
    interrupted = run(*args, "-o", out)
    assert interrupted.exit_code != 0 and "Traceback" not in interrupted.output
    written = len(records_of(out))
    assert 0 < written < 12
    fake_models.options.pop("fail_after")
    resumed = run(*args, "-o", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"{12 - written} records written to {out} (0 flagged, {written} already there)" in resumed.stderr
    fed = [text for kind, text, _ in fake_models.last.calls if kind == "score"]
    assert len(fed) == 12 - written and all(f"Post {i}:" not in t for i in range(written) for t in fed)
    assert records_of(out) == records_of(whole)  # nothing redone, nothing dropped, nothing changed


def test_an_existing_output_without_resume_is_refused_in_one_line(fake_models, tmp_path):
    out = tmp_path / "out.jsonl"
    assert run("analyze", "-m", fake_models.path, "--task", "DR", "hi", "-o", out).exit_code == 0
    again = run("analyze", "-m", fake_models.path, "--task", "DR", "hi", "-o", out)
    assert again.exit_code == 1 and again.output.count("\n") == 1 and "--resume" in again.output
    assert len(records_of(out)) == 1


# -- bad input ----------------------------------------------------------------------------------------------


def test_bad_rows_become_flagged_records_and_the_rest_are_analysed(fake_models, tmp_path):
    source = tmp_path / "posts.jsonl"
    source.write_bytes(
        b'{"id": "a", "text": "I feel hopeless"}\n'
        b"{not json\n"
        b'{"id": "c", "text": ""}\n'
        b'{"id": "d", "body": "no text field"}\n'
        b'{"id": "e", "text": "bad byte \xff here"}\n'
        b'{"id": "f", "text": 42}\n'
        b'{"id": "g", "text": "Work is too much."}\n'
    )
    out = tmp_path / "out.csv"
    args = ["-i", source, "--id-column", "id", "-o", out]
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "--no-explain", *args)
    assert result.exit_code == 0, result.output
    assert "7 records written" in result.stderr and "(5 flagged, 0 already there)" in result.stderr
    records = {r["id"]: r for r in records_of(out)}
    assert_record_is_the_models(records["a"], "I feel hopeless", explain=False)
    assert_record_is_the_models(records["g"], "Work is too much.", explain=False)
    assert records["c"]["flags"] == ["empty"] and records["c"]["label"] is None
    assert "JSON" in records["2"]["flags"][0]
    assert records["d"]["flags"] == ["missing field 'text'"]
    assert records["5"]["flags"] == ["undecodable: line 5 has bytes that are not UTF-8"]  # its id unreadable too
    assert records["f"]["flags"] == ["field 'text' is a int, not text"]
    assert all(records[i]["label"] is None and records[i]["probabilities"] is None for i in ("2", "c", "d", "5", "f"))
    assert len([c for c in fake_models.last.calls if c[0] == "score"]) == 2


@pytest.mark.parametrize(
    "args, names",
    [
        (["-i", "{dir}/posts.csv"], ["posts.csv", "body"]),  # no text column: the columns it has
        (["-i", "{dir}/posts.csv", "--text-column", "nope"], ["posts.csv", "nope"]),
        (["-i", "{dir}/posts.pdf"], ["posts.pdf", ".txt"]),
        (["-i", "{dir}/missing.txt"], ["missing.txt"]),
        (["--task", "XYZ", "hi"], ["XYZ", "DR"]),
        (["-m", "{dir}/nope.gguf", "hi"], ["nope.gguf"]),
    ],
)
def test_bad_input_is_one_line_naming_the_file_or_field(fake_models, tmp_path, args, names):
    (tmp_path / "posts.csv").write_text("id,body\n1,I feel sad\n")
    (tmp_path / "posts.pdf").write_text("%PDF")
    args = [a.format(dir=tmp_path) for a in args]
    task = [] if "--task" in args else ["--task", "DR"]
    model = [] if "-m" in args else ["-m", fake_models.path]
    result = run("analyze", *model, *task, *args)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert all(name in result.output for name in names), result.output


def test_a_free_answer_no_rule_reads_is_flagged_unparsed(fake_models, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run("analyze", "-m", fake_models.path, "--task", "DR", "--free", "--max-tokens", "6", "-o", out, POSTS[0])
    assert result.exit_code == 0, result.output
    (record,) = records_of(out)
    engine = FakeEngine()
    answer = engine.generate(engine.tokenize(DR.render(POSTS[0], "instruction"), add_bos=True), max_tokens=6)
    assert record["answer"] == answer.text().strip() and record["probabilities"] is None
    assert record["label"] is None and record["flags"] == ["unparsed"]  # the fake's words are never "yes"/"no"
    assert record["run"]["mode"] == "free"


# -- eval and compare -----------------------------------------------------------------------------------------


def test_eval_reports_the_models_labels_against_gold_and_compare_shows_the_change(fake_models, imhi_dir, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    data = imhi_subset(imhi_dir, tmp_path / "data", ("DR", "Irf"), rows=6)
    result = run("eval", "-m", fake_models.path, "--data", data, "--report", tmp_path / "a")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert set(report["tasks"]) == {"DR", "Irf-belongingness", "Irf-burdensomeness"}
    rows = [row for path in sorted(data.iterdir()) for row in read_file(path)]
    for row in rows:
        task, form, post = TASKS.detect(row.text)
        (reported,) = [r for r in report["rows"][task.name] if r["id"] == row.id]
        assert reported["pred"] == expected(post, task, form)[0]
        assert reported["gold"] == task.parse_answer(row.gold, form)
    for task, task_rows in report["rows"].items():
        gold, pred = [r["gold"] for r in task_rows], [r["pred"] for r in task_rows]
        assert report["tasks"][task]["accuracy"] == pytest.approx(accuracy_score(gold, pred))
        assert report["tasks"][task]["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"))
    assert "weighted F1" in result.stdout and (tmp_path / "a.md").exists()

    fake_models.options["salt"] = "another model"
    assert run("eval", "-m", fake_models.path, "--data", data, "--report", tmp_path / "b").exit_code == 0
    other = json.loads((tmp_path / "b.json").read_text())
    same = run("compare", tmp_path / "a.json", tmp_path / "a.json")
    compared = run("compare", tmp_path / "a.json", tmp_path / "b.json")
    assert same.exit_code == 0 and compared.exit_code == 0, compared.output
    for task, task_rows in report["rows"].items():
        line = next(line.split() for line in same.stdout.splitlines() if line.split()[:1] == [task])
        assert line[1:] == ["+0.0000", "+0.0000", "+0.0000", "+0", str(len(task_rows)), "0.0%"]
        delta = other["tasks"][task]["accuracy"] - report["tasks"][task]["accuracy"]
        changed = sum(a["pred"] != b["pred"] for a, b in zip(task_rows, other["rows"][task]))
        line = next(line.split() for line in compared.stdout.splitlines() if line.split()[:1] == [task])
        assert line[1] == f"{delta:+.4f}" and line[-1] == f"{changed / len(task_rows):.1%}", line
    assert any(a["pred"] != b["pred"] for t in report["rows"] for a, b in zip(report["rows"][t], other["rows"][t]))


# -- prompt, generate, user tasks -------------------------------------------------------------------------------


def test_prompt_with_a_model_shows_its_bos_or_its_wrapper_around_the_post_as_typed(fake_models):
    post = "post {{ 1+1 }} </s>"
    result = run("prompt", "--task", "DR", "-m", fake_models.path, post)
    assert result.exit_code == 0, result.output
    assert result.stdout == "<s>" + DR.render(post, "instruction") + "\n"
    fake_models.options["architecture"] = "chatglm"
    glm = run("prompt", "--task", "suicide-risk", "-m", fake_models.path, "我很累")
    task = TASKS.task("suicide-risk")
    assert glm.stdout == "[gMASK]<sop><|user|>\n" + task.render("我很累", "chinese") + "<|assistant|>\n"


def test_generate_prints_the_models_greedy_continuation_and_stops_at_max_tokens(fake_models):
    result = run("generate", "-m", fake_models.path, "--max-tokens", "40", "The capital of France is")
    assert result.exit_code == 0, result.output
    engine = FakeEngine()
    want = engine.generate(engine.tokenize("The capital of France is", add_bos=True), max_tokens=40).text()
    assert result.stdout == want + "\n" and len(want.split()) > 2
    short = run("generate", "-m", fake_models.path, "--max-tokens", "2", "The capital of France is")
    assert len(short.stdout.split()) == 2 and want.startswith(short.stdout.rstrip("\n"))


def test_a_user_task_folder_adds_a_task_the_model_answers(fake_models, tmp_path):
    folder = tmp_path / "prompts"
    (folder / "tasks").mkdir(parents=True)
    definition = {
        "family": "sleep",
        "language": "en",
        "labels": ["poor", "good"],
        "questions": {"instruction": "How does the poster sleep?"},
        "answers": {"instruction": {"poor": "The poster sleeps poorly.", "good": "The poster sleeps well."}},
    }
    (folder / "tasks" / "sleep.json").write_text(json.dumps(definition))
    out = tmp_path / "out.jsonl"
    result = run(
        "analyze", "-m", fake_models.path, "--prompts", folder, "--task", "sleep", "--no-explain", "-o", out, POSTS[0]
    )
    assert result.exit_code == 0, result.output
    (record,) = records_of(out)
    task = load_tasks(folder).task("sleep")
    assert_record_is_the_models(record, POSTS[0], task, explain=False)
    assert set(record["probabilities"]) == {"poor", "good"}
