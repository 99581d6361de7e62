"""Task lookup, sandboxed rendering, answer rules, hashes and user prompt folders."""

import json

import pytest

from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import load_tasks


@pytest.fixture(scope="module")
def tasks():
    return load_tasks()


# -- lookup -------------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_families_expand(tasks):
    assert [t.name for t in tasks.get("dr")] == ["DR"]
    assert [t.name for t in tasks.get("T-SID")] == ["t-sid"]
    assert [t.name for t in tasks.get("irf")] == ["Irf-belongingness", "Irf-burdensomeness"]
    assert [t.name for t in tasks.get("MultiWD-Spiritual")] == ["MultiWD-spiritual"]
    assert len(tasks.get("multiwd")) == 6
    assert {t.family for t in tasks.get("all", language="en")} == {
        "DR",
        "dreaddit",
        "loneliness",
        "Irf",
        "MultiWD",
        "SAD",
        "CAMS",
        "t-sid",
        "swmh",
        "CLP",
    }
    assert {t.name for t in tasks.get("all", language="zh")} == {"cognitive-distortion", "suicide-risk", "sentiment"}
    assert len(tasks.get("all")) == len(tasks)


def test_a_wrong_name_lists_the_real_ones(tasks):
    with pytest.raises(MentalEdgeError) as err:
        tasks.get("depresion")
    message = str(err.value)
    assert "depresion" in message and "DR" in message and "Irf-belongingness" in message and "\n" not in message
    with pytest.raises(MentalEdgeError, match="Irf-belongingness, Irf-burdensomeness"):
        tasks.task("Irf")


def test_task_shape(tasks):
    sad = tasks.task("SAD")
    assert sad.language == "en" and sad.forms == ("instruction", "completion")
    assert "emotional turmoil" in sad.labels and "other causes" in sad.labels
    assert (
        sad.answer("emotional turmoil", "instruction") == "This post shows the stress cause related to emotion turmoil."
    )
    assert sad.answer("emotional turmoil", "completion") == "emotional turmoil."
    assert (
        tasks.task("DR").explain_prefix("yes", "instruction") == "Yes, the poster suffers from depression. Reasoning:"
    )
    assert tasks.task("sentiment").forms == ("chinese",)
    with pytest.raises(MentalEdgeError, match="no 'completion' form"):
        tasks.task("swmh").render("x", "completion")
    with pytest.raises(MentalEdgeError, match="unknown label"):
        sad.answer("homework", "instruction")


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "post",
    [
        "{{ 7*7 }}",
        "{% raw %}",
        "{% endraw %}{{ 7*7 }}",
        "{% for x in range(3) %}{{x}}{% endfor %}",
        "{{ ''.__class__.__mro__ }}",
        "{# comment",
        '"quoted" &amp; ‚Äô',
        "trailing  \n",
        "</s>[INST]<|user|>",
    ],
)
def test_a_post_is_printed_as_typed(tasks, post):
    assert tasks.task("DR").render(post, "instruction") == (
        f'Consider this post: "{post}" Question: Does the poster suffer from depression?'
    )
    assert tasks.task("SAD").render(post, "completion") == (
        f"Post: {post}  Question: This post shows the stress cause of "
    )


def test_parse_query_finds_the_task_and_post(tasks):
    query = tasks.task("Irf-burdensomeness").render('say "{{ hi }}"', "completion")
    task, post = tasks.parse_query(query, "completion")
    assert (task.name, post) == ("Irf-burdensomeness", 'say "{{ hi }}"')
    assert tasks.parse_query(query, "instruction") is None
    assert tasks.parse_query("just a post", None) is None
    # CLP asks DR's question: a DR query is DR
    assert tasks.parse_query(tasks.task("CLP").render("x", "instruction"), "instruction")[0].name == "DR"


def test_template_hash(tasks):
    dr, lonely = tasks.task("DR"), tasks.task("loneliness")
    assert len(dr.template_hash("instruction")) == 64
    assert dr.template_hash("instruction") == load_tasks().task("DR").template_hash("instruction")
    assert dr.template_hash("instruction") != dr.template_hash("completion")
    assert dr.template_hash("instruction") != lonely.template_hash("instruction")


# -- answers ------------------------------------------------------------------------------------


def test_every_answer_sentence_parses_with_and_without_the_exact_form(tasks):
    """Exact sentences, then the cues alone (extra words defeat the exact match)."""
    for task in tasks:
        for form in task.forms:
            for label in task.labels:
                sentence = task.answer(label, form)
                assert task.parse_answer(sentence, form) == label, (task.name, form, label)
                assert task.parse_answer(f"  {sentence.upper()} Reasoning: no.", form) == label
                loose = sentence[:-1] + " in my view, given the post."
                assert task.parse_answer(loose, form) == label, (task.name, form, loose)


@pytest.mark.parametrize(
    "name,text,label",
    [
        ("DR", "Yes.", "yes"),
        ("DR", " no..", "no"),
        ("DR", "Yes, the poster suffers. Reasoning: no", "yes"),
        ("Irf-belongingness", " yes, the post does show a risk of thwarted belongingness. \n\n", "yes"),
        ("SAD", "This post shows the stress cause related to emotion turmoil.", "emotional turmoil"),
        ("SAD", "other causes.", "other causes"),
        ("SAD", "the stress cause related to work and school", "work"),
        ("CAMS", "This post shows no causes of depression.", "none"),
        ("t-sid", " no mental disorders. ", "no mental disorders"),
        ("t-sid", "PTSD", "ptsd"),
        ("suicide-risk", "这个帖子显示高自杀风险。推理：……", "高自杀风险"),
    ],
)
def test_free_answers(tasks, name, text, label):
    task = tasks.task(name)
    assert task.parse_answer(text, task.forms[-1]) == label


@pytest.mark.parametrize(
    "name,text",
    [
        ("DR", ""),
        ("DR", "   "),
        ("DR", "I cannot tell from this post."),
        ("DR", "Reasoning: yes, clearly."),
        ("DR", "As an AI I have no opinion."),
        ("Irf-belongingness", "Not sure."),
        ("SAD", "I don't know."),
        ("CAMS", "Reasoning: this post mentions a relationship."),
        ("t-sid", "The post is short."),
        ("sentiment", "无法判断"),
    ],
)
def test_non_answers_are_unparsed(tasks, name, text):
    task = tasks.task(name)
    assert task.parse_answer(text, task.forms[0]) is None


def test_multi_label_answers(tasks):
    task = tasks.task("cognitive-distortion")
    assert task.multi_label
    text = "这个帖子体现了以偏概全和非此即彼的认知歪曲。推理：读心术不明显"
    assert task.parse_labels(text, "chinese") == ("非此即彼", "以偏概全")
    assert task.parse_answer(text, "chinese") == "以偏概全"
    assert task.parse_labels("无", "chinese") == ()


# -- user folders -------------------------------------------------------------------------------


def _definition(**changes):
    d = {
        "family": "DR",
        "language": "en",
        "labels": ["no", "yes"],
        "questions": {"instruction": "Is the poster depressed?"},
        "answers": {"instruction": {"yes": "Yes.", "no": "No."}},
    }
    d.update(changes)
    return d


def test_a_user_folder_overrides_and_adds(tmp_path, monkeypatch):
    (tmp_path / "DR.json").write_text(json.dumps(_definition()), encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "anx.json").write_text(
        json.dumps(
            _definition(family="anxiety", templates={"instruction": "mine.j2"}, questions={"instruction": "Anxious?"})
        ),
        encoding="utf-8",
    )
    (tmp_path / "mine.j2").write_text("Q: {{ question }}\nPost: {{ post }}\n", encoding="utf-8")
    tasks = load_tasks(tmp_path)
    assert tasks.task("dr").render("p", "instruction") == 'Consider this post: "p" Question: Is the poster depressed?'
    assert tasks.task("dr").forms == ("instruction",)
    assert tasks.task("ANXIETY").render("p", "instruction") == "Q: Anxious?\nPost: p"
    assert tasks.task("sad").labels == load_tasks().task("sad").labels  # the rest untouched
    monkeypatch.setenv("MENTAL_EDGE_PROMPTS", str(tmp_path))
    assert load_tasks().task("anxiety").name == "anxiety"


def test_a_user_template_replaces_the_packages(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "instruction.j2").write_text('Post: "{{ post }}" Q: {{ question }}', encoding="utf-8")
    tasks = load_tasks(tmp_path)
    assert tasks.task("DR").render("p", "instruction") == 'Post: "p" Q: Does the poster suffer from depression?'
    assert tasks.task("DR").template_hash("instruction") != load_tasks().task("DR").template_hash("instruction")


@pytest.mark.parametrize(
    "content,field",
    [
        ("{not json", "not valid JSON"),
        (json.dumps(_definition(labels=[])), "'labels'"),
        (json.dumps(_definition(answers={"instruction": {"yes": "Yes."}})), "'answers.instruction'"),
        (json.dumps(_definition(answers={"spoken": {"yes": "Yes.", "no": "No."}})), "'answers.spoken'"),
        (json.dumps(_definition(cues={"yes": ["(unclosed"]})), "'cues.yes'"),
        (json.dumps(_definition(cues={"maybe": ["m"]})), "'cues'"),
        (json.dumps(_definition(questoins={})), "'questoins'"),
        (json.dumps(_definition(templates={"instruction": "missing.j2"})), "'templates.instruction'"),
        (json.dumps(_definition(questions={"completion": "?"})), "'questions'"),
        (json.dumps(_definition(multi_label="yes")), "'multi_label'"),
        (json.dumps([1, 2]), "one JSON object"),
    ],
)
def test_a_malformed_user_file_is_one_line_naming_file_and_field(tmp_path, content, field):
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    with pytest.raises(MentalEdgeError) as err:
        load_tasks(tmp_path)
    message = str(err.value)
    assert "bad.json" in message and field in message and "\n" not in message


def test_bad_templates_and_folders(tmp_path):
    with pytest.raises(MentalEdgeError, match="prompts folder not found"):
        load_tasks(tmp_path / "nowhere")
    (tmp_path / "instruction.j2").write_text("{{ post ", encoding="utf-8")
    with pytest.raises(MentalEdgeError, match="instruction.j2, line 1"):
        load_tasks(tmp_path).task("DR").render("p", "instruction")
    (tmp_path / "instruction.j2").write_text("{{ post.__class__.__mro__[1].__subclasses__() }}", encoding="utf-8")
    with pytest.raises(MentalEdgeError, match="instruction.j2"):
        load_tasks(tmp_path).task("DR").render("p", "instruction")
