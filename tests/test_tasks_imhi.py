"""Templates and answer rules against every row of the IMHI test data (instruction, completion, expert)."""

import collections
import csv

import pytest

from mental_edge.prompting import load_tasks

FOLDERS = {"test_instruction": "instruction", "test_complete": "completion", "expert": "instruction"}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _naive_post(query, form):
    """The post as the README describes the query layout, cut by hand (an independent reference)."""
    if form == "instruction":
        assert query.startswith('Consider this post: "')
        return query[len('Consider this post: "') : query.rindex('" Question: ')]
    assert query.startswith("Post: ")
    return query[len("Post: ") : query.rindex("  Question: ")]


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


@pytest.fixture(scope="module")
def data(imhi_dir):
    """{(folder, family): rows} for every IMHI file."""
    return {
        (folder, path.stem): _rows(path) for folder in FOLDERS for path in sorted((imhi_dir / folder).glob("*.csv"))
    }


def test_every_query_is_rebuilt_byte_for_byte(tasks, data):
    counted = collections.Counter()
    for (folder, family), rows in data.items():
        form = FOLDERS[folder]
        for i, row in enumerate(rows):
            query = row["query"]
            found = tasks.detect(query)
            assert found is not None, f"{folder}/{family}.csv row {i}: no task recognises the query"
            task, found_form, post = found
            assert (task.family, found_form) == (family, form), f"{folder}/{family}.csv row {i}"
            assert post == _naive_post(query, form), f"{folder}/{family}.csv row {i}: post cut wrongly"
            assert task.render(post, form) == query, f"{folder}/{family}.csv row {i}"
            assert tasks.parse_query(query, form) == (task, post)
            counted[folder] += 1
    assert counted["test_instruction"] == counted["test_complete"] == 8169
    assert counted["expert"] == 9 * 35


def _start(post):
    """The files' posts differ in whitespace between forms; their first characters identify a row."""
    return "".join(post.split())[:30]


def _gold_label(task, gold):
    """The true label of an instruction row: its gold begins with exactly one label's answer sentence."""
    head = gold[: gold.index("Reasoning:")]
    matches = [label for label in task.labels if head == task.answer(label, "instruction") + " "]
    assert len(matches) == 1, f"{task.name}: gold {head!r} is no answer sentence"
    return matches[0]


def test_every_gold_answer_parses_to_the_rows_label(tasks, data):
    distribution = collections.defaultdict(collections.Counter)
    for (folder, family), rows in data.items():
        if folder == "test_complete":
            continue
        paired = data.get(("test_complete", family)) if folder == "test_instruction" else None
        for i, row in enumerate(rows):
            task, post = tasks.parse_query(row["query"], "instruction")
            label = _gold_label(task, row["gpt-3.5-turbo"])
            assert task.parse_answer(row["gpt-3.5-turbo"], "instruction") == label, f"{folder}/{family} row {i}"
            distribution[(folder, task.name)][label] += 1
            if paired is not None:  # the completion file holds the same rows in the same order
                other = paired[i]
                task_c, post_c = tasks.parse_query(other["query"], "completion")
                assert task_c == task and _start(post_c) == _start(post), f"test_complete/{family} row {i}"
                parsed = task.parse_answer(other["gpt-3.5-turbo"], "completion")
                assert parsed == label, f"test_complete/{family} row {i}: {other['gpt-3.5-turbo'][:60]!r}"
                distribution[("test_complete", task.name)][label] += 1
    for key in sorted(distribution):
        print(key, dict(distribution[key]))
    for name in tasks.names("en"):
        if name not in ("swmh", "CLP"):
            assert set(distribution[("test_instruction", name)]) == set(tasks.task(name).labels), name
            assert distribution[("test_instruction", name)] == distribution[("test_complete", name)]
    # the figures the README gives for the data
    assert sum(distribution[("test_instruction", "SAD")].values()) == 684
    assert distribution[("test_instruction", "CAMS")]["none"] == 107
    assert distribution[("test_instruction", "DR")] == {"yes": 307, "no": 98}
