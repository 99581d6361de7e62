"""Reading and checking task definitions: the package's prompts/, then a user's folder.

A user folder holds `<family>.json` files (or a `tasks/` subfolder of them) and `*.j2` templates (or a
`templates/` subfolder). A family defined there replaces the package's family of the same name; a
template with a package template's file name replaces it for every task that uses it. The format is
described in prompts/README.md. Every problem is one line naming the file and the field.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from mental_edge.errors import MentalEdgeError

FORMS = ("instruction", "completion", "chinese")
_KEYS = {
    "family",
    "language",
    "source",
    "labels",
    "templates",
    "questions",
    "subtasks",
    "answers",
    "cues",
    "multi_label",
    "recognize",
    "reasoning_marker",
}


def read_definitions(user_dir: Path | None) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """Validated family definitions and templates ({file name: (file name, source)})."""
    package = resources.files("mental_edge.prompts")
    raw = [(f"prompts/tasks/{p.name}", p.read_bytes()) for p in _listing(package / "tasks", ".json")]
    templates = {p.name: p.read_text(encoding="utf-8") for p in _listing(package / "templates", ".j2")}
    if user_dir is not None:
        if not user_dir.is_dir():
            raise MentalEdgeError(f"prompts folder not found: {user_dir}")
        for folder in (user_dir, user_dir / "tasks"):
            raw += [(str(p), p.read_bytes()) for p in _listing(folder, ".json")]
        for folder in (user_dir, user_dir / "templates"):
            templates.update({p.name: _read_text(p) for p in _listing(folder, ".j2")})
    families: dict[str, dict] = {}
    for origin, data in raw:
        definition = check_definition(_load_json(origin, data), origin, templates)
        families[definition["family"].lower()] = definition  # later files (the user's) replace
    return list(families.values()), {name: (name, src) for name, src in templates.items()}


def _listing(folder, suffix: str) -> list:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file()), key=lambda p: p.name)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MentalEdgeError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _load_json(origin: str, data: bytes) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MentalEdgeError(f"{origin}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise MentalEdgeError(f"{origin}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(value, dict):
        raise MentalEdgeError(f"{origin}: a task file holds one JSON object")
    return value


def check_definition(d: dict, origin: str, templates: dict[str, str]) -> dict:
    """The definition with defaults filled in, or a MentalEdgeError naming `origin` and the field."""

    def fail(field: str, problem: str):
        raise MentalEdgeError(f"{origin}: field '{field}' {problem}")

    unknown = sorted(set(d) - _KEYS)
    if unknown:
        fail(unknown[0], f"is not a task field (fields: {', '.join(sorted(_KEYS))})")
    for key in ("family", "language"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            fail(key, "must be a non-empty string")
    labels = d.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        fail("labels", "must be a non-empty list of strings")
    if len(set(labels)) != len(labels):
        fail("labels", "has a label twice")
    forms = _check_answers(d.get("answers"), labels, fail)
    _check_questions(d, forms, fail)
    out = dict(d)
    out["templates"] = _check_templates(d.get("templates", {}), forms, templates, fail)
    out["cues"] = _check_cues(d.get("cues", {}), labels, d["language"], fail)
    for key, default in (("multi_label", False), ("recognize", True)):
        out[key] = d.get(key, default)
        if not isinstance(out[key], bool):
            fail(key, "must be true or false")
    out["reasoning_marker"] = d.get("reasoning_marker", "Reasoning:")
    if not isinstance(out["reasoning_marker"], str) or not out["reasoning_marker"].strip():
        fail("reasoning_marker", "must be a non-empty string")
    return out


def _check_answers(answers, labels: list[str], fail) -> list[str]:
    """The forms a family offers: those its answers are given in."""
    if not isinstance(answers, dict) or not answers:
        fail("answers", "must map each form to {label: answer sentence}")
    for form, by_label in answers.items():
        if form not in FORMS:
            fail(f"answers.{form}", f"is not a form ({', '.join(FORMS)})")
        if not isinstance(by_label, dict) or set(by_label) != set(labels):
            fail(f"answers.{form}", "must give one answer sentence for each label")
        if not all(isinstance(s, str) and s.strip() for s in by_label.values()):
            fail(f"answers.{form}", "must hold non-empty strings")
    return list(answers)


def _check_questions(d: dict, forms: list[str], fail) -> None:
    if ("questions" in d) == ("subtasks" in d):
        fail("questions", "must be given, or 'subtasks' instead (one of the two)")
    groups = {"questions": d["questions"]} if "questions" in d else d["subtasks"]
    if "subtasks" in d and (not isinstance(groups, dict) or not groups):
        fail("subtasks", "must map each question's name to {form: question}")
    for name, questions in groups.items():
        field = "questions" if "questions" in d else f"subtasks.{name}"
        if not isinstance(questions, dict) or set(questions) != set(forms):
            fail(field, f"must give a question for each form ({', '.join(forms)})")
        if not all(isinstance(q, str) for q in questions.values()):
            fail(field, "must hold strings")


def _check_templates(given, forms: list[str], templates: dict[str, str], fail) -> dict[str, str]:
    if not isinstance(given, dict):
        fail("templates", "must map each form to a template file name")
    chosen = {form: given.get(form, f"{form}.j2") for form in forms}
    for form, name in chosen.items():
        if name not in templates:
            fail(f"templates.{form}", f"names {name!r}, which is in no prompts folder")
    return chosen


def _check_cues(given, labels: list[str], language: str, fail) -> dict[str, list[str]]:
    """Cues are regular expressions (case-insensitive); a label without cues is found by its name."""
    if not isinstance(given, dict) or not set(given) <= set(labels):
        fail("cues", "must map labels of the task to lists of regular expressions")
    cues = {}
    for label in labels:
        patterns = given.get(label) or [_name_cue(label, language)]
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            fail(f"cues.{label}", "must be a list of regular expressions")
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                fail(f"cues.{label}", f"has a bad regular expression {pattern!r}: {exc}")
        cues[label] = patterns
    return cues


def _name_cue(label: str, language: str) -> str:
    escaped = re.escape(label.lower())
    return escaped if language == "zh" else rf"\b{escaped}\b"
