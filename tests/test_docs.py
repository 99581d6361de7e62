"""The documentation stays true: README.md's commands run as written, docs/cli.md is what `--help` prints, and
every relative link of README.md and docs/ points at a file (and heading) that exists."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mental_edge.store.pull import PACKAGED_MODELS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

# Pages README links that another change is writing: a link to one of them may point nowhere until it lands.
# Remove a name here when its page is in the tree.
PENDING_PAGES: set[str] = set()


def _gen_cli():
    spec = importlib.util.spec_from_file_location("gen_cli", REPO / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_what_help_prints():
    expected = _gen_cli().render()
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == expected, (
        "docs/cli.md differs from the commands' --help: run `python docs/gen_cli.py`"
    )


def test_the_cli_reference_holds_every_command_and_subcommand():
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    titles = set(re.findall(r"^## (mental-edge.*)$", page, re.M))
    for must in ("mental-edge", "mental-edge analyze", "mental-edge models rm", "mental-edge serve"):
        assert must in titles


def test_the_readme_is_a_front_page():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150


# ---- links ----


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_at_a_file_and_heading(page):
    for link in _links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        name = target.relative_to(REPO).as_posix() if target.is_relative_to(REPO) else str(target)
        if not target.exists():
            assert name in PENDING_PAGES, f"{page.name}: {link} points at nothing"
            continue
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: {link}: no such heading in {name}"


def test_a_pending_page_is_only_listed_while_it_is_missing():
    """Keeps PENDING_PAGES honest: once the page lands its links are checked like any other."""
    assert not [name for name in PENDING_PAGES if (REPO / name).exists()], "remove landed pages from PENDING_PAGES"


# ---- README's commands, run as written ----

# Files README's commands read, made by the test in the folder the commands run in.
FILES = {
    "posts.txt": "I can't sleep and I feel empty every day.\nHad a lovely walk with my sister today.\n"
    "Exams next week and my chest is tight all the time.\n",
}

# Which command lines run and which do not, by rule: every line of a ```bash block must match one (in order).
SKIP_RULES = [
    (r"(\w+=\S+ )*pip install\b", "installs packages (.ci/run runs README's install line)"),
    (r"python -m pytest\b", "runs the test suite itself"),
    (r"mental-edge (serve|chat)\b", "a server or an interactive session"),
    (r"mental-edge .*--ray\b", "needs a Ray cluster"),
    (r"ray ", "starts a Ray cluster"),
]


def _pull_needs_the_hub(command: str) -> bool:
    words = shlex.split(command)
    return words[:2] == ["mental-edge", "pull"] and words[2] not in PACKAGED_MODELS


def classify(command: str) -> str | None:
    """None when the command runs here, else why it is skipped."""
    for pattern, why in SKIP_RULES:
        if re.match(pattern, command):
            return why
    if _pull_needs_the_hub(command):
        return "downloads from the Hugging Face hub"
    if command.startswith("mental-edge "):
        return None
    raise AssertionError(f"README command with no rule: {command!r} (add it to SKIP_RULES or make it run)")


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of README's fenced blocks, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def shell_commands(block: str) -> list[str]:
    """A block's commands: continued lines joined, comments and blank lines dropped, `a && b` split."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        command = shlex.join(words)
        out += [part.strip() for part in command.split(" && ")]
    return out


def test_every_readme_command_has_a_rule():
    ran = skipped = 0
    for language, block in readme_blocks():
        if language == "bash":
            for command in shell_commands(block):
                if classify(command) is None:
                    ran += 1
                else:
                    skipped += 1
    assert ran >= 4 and skipped >= 2, (ran, skipped)


# Runs a README python block, then prints the value of its last expression (the records) as JSON.
PYTHON_RUNNER = """
import ast, json, sys
tree = ast.parse(sys.stdin.read(), "README.md")
last = tree.body.pop()
namespace = {}
exec(compile(tree, "README.md", "exec"), namespace)
value = eval(compile(ast.Expression(last.value), "README.md", "eval"), namespace)
print(json.dumps([{"task": r.task, "label": r.label, "probabilities": r.probabilities} for r in value]))
"""


def test_readme_commands_run_as_written(smollm2_gguf, tmp_path):
    """Every command README shows that needs no hub, no server and no install, in README's order, in one folder
    and an empty store (MENTAL_EDGE_HOME), as a user would type them; then the Python example."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert env["MENTAL_EDGE_HOME"] and env["HF_HUB_OFFLINE"] == "1"  # conftest's isolated_home
    ran, records = [], None
    for language, block in readme_blocks():
        if language == "bash":
            for command in shell_commands(block):
                if classify(command) is not None:
                    continue
                done = subprocess.run(
                    ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
                )
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                assert "Error" not in done.stderr, done.stderr
                ran.append(command)
        elif language == "python":
            done = subprocess.run(
                [sys.executable, "-c", PYTHON_RUNNER],
                input=block,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            records = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(c.startswith("mental-edge analyze") for c in ran) and any(c.startswith("mental-edge pull") for c in ran)
    assert records and all(r["task"] == "DR" and r["label"] in r["probabilities"] for r in records)
    outputs = [json.loads(line) for p in tmp_path.glob("*.jsonl") for line in p.read_text().splitlines()]
    posts = len(FILES["posts.txt"].splitlines())
    assert outputs and len(outputs) % posts == 0  # every post written, for each task the command asked
