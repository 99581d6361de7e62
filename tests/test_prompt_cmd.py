"""`mental-edge prompt` prints the exact query, from an argument or stdin."""

import json

from support.cli import run

from mental_edge.prompting import load_tasks


def test_prints_the_instruction_prompt_by_default():
    post = 'I can\'t sleep {{ 7*7 }} "again" </s>'
    result = run("prompt", "--task", "dr", post)
    assert result.exit_code == 0, result.output
    assert result.output == load_tasks().task("DR").render(post, "instruction") + "\n"
    assert result.output.startswith(f'Consider this post: "{post}" Question: ')


def test_completion_form_from_stdin_keeps_the_trailing_space():
    result = run("prompt", "--task", "SAD", "--form", "completion", input="work is too much\n")
    assert result.exit_code == 0, result.output
    assert result.output == "Post: work is too much  Question: This post shows the stress cause of \n"


def test_a_family_prints_each_question():
    result = run("prompt", "--task", "Irf", "x")
    assert result.exit_code == 0
    assert "==> Irf-belongingness <==" in result.output and "perceived burdensomeness?" in result.output


def test_chinese_task_uses_its_own_form():
    result = run("prompt", "--task", "suicide-risk", "我很累")
    assert result.exit_code == 0
    assert "我很累" in result.output and "Consider this post" not in result.output


def test_user_prompts_folder(tmp_path):
    (tmp_path / "completion.j2").write_text("<<{{ post }}>> {{ question }}", encoding="utf-8")
    result = run("prompt", "--task", "DR", "--form", "completion", "--prompts", str(tmp_path), "p")
    assert result.output == '<<p>> The answer to the question "Does the poster suffers from depression?" is \n'


def test_errors_are_one_line():
    for args in (["--task", "nope", "x"], ["--task", "swmh", "--form", "completion", "x"]):
        result = run("prompt", *args)
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1
        assert "Traceback" not in result.output


def test_a_malformed_prompts_file_is_an_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"family": "x"}), encoding="utf-8")
    result = run("prompt", "--task", "DR", "--prompts", str(tmp_path), "p")
    assert result.exit_code == 1 and "x.json" in result.output and "'language'" in result.output
