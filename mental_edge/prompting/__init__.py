"""Tasks: what to ask a model about a post, and how to read its answer.

A task family is data (prompts/tasks/<family>.json) plus Jinja templates (prompts/templates/*.j2); a
family with several questions (Irf, MultiWD) gives one Task per question, named `<family>-<question>`.
Definitions are read by `mental_edge.prompting.files`; a user folder (`--prompts DIR` or
$MENTAL_EDGE_PROMPTS) adds families or replaces them, and replaces templates by file name.

Templates run in jinja2's immutable sandbox with the post passed as a variable, so whatever a post
holds (`{{ 7*7 }}`, `{% raw %}`, quotes) is printed as typed and never evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mental_edge.errors import MentalEdgeError
from mental_edge.prompting.files import FORMS, check_definition, read_definitions

__all__ = ["FORMS", "Task", "TaskSet", "load_tasks"]

_ENV = ImmutableSandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
_SENTINEL = "\x00mental-edge-post\x00"


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    language: str
    labels: tuple[str, ...]
    forms: tuple[str, ...]
    multi_label: bool = False
    recognize: bool = True  # False: parse_query never picks it (a question shared with another task)
    reasoning_marker: str = "Reasoning:"
    questions: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    answers: Mapping[str, Mapping[str, str]] = field(default_factory=dict, compare=False, repr=False)
    templates: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)
    cues: Mapping[str, tuple[re.Pattern, ...]] = field(default_factory=dict, compare=False, repr=False)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    # -- prompts -----------------------------------------------------------------------------
    def render(self, post: str, form: str) -> str:
        """The query text for `post` in `form`, rendered in the sandbox."""
        try:
            return self._template(form).render(post=post, question=self.questions[form])
        except jinja2.TemplateError as exc:
            name = self.templates[form][0]
            raise MentalEdgeError(f"template {name} (task {self.name}): {exc}") from None

    def answer(self, label: str, form: str) -> str:
        """The exact answer sentence of `label` in `form`, e.g. 'Yes, the poster suffers from depression.'"""
        self._check_form(form)
        if label not in self.labels:
            raise MentalEdgeError(f"task {self.name}: unknown label {label!r} (labels: {', '.join(self.labels)})")
        return self.answers[form][label]

    def explain_prefix(self, label: str, form: str) -> str:
        """What an explanation is generated after: the answer sentence, then the reasoning marker."""
        return f"{self.answer(label, form)} {self.reasoning_marker}"

    def template_hash(self, form: str) -> str:
        """sha256 over the template source and this task's definition: what a record was made with."""
        self._check_form(form)
        name, source = self.templates[form]
        definition = {
            "name": self.name,
            "family": self.family,
            "language": self.language,
            "labels": self.labels,
            "form": form,
            "template": name,
            "question": self.questions[form],
            "answers": self.answers[form],
            "multi_label": self.multi_label,
            "reasoning_marker": self.reasoning_marker,
        }
        blob = source + "\x00" + json.dumps(definition, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def frame(self, form: str) -> tuple[str, str] | None:
        """(text before the post, text after it) in a rendered query, or None if the post is transformed."""
        key = ("frame", form)
        if key not in self._cache:
            parts = self.render(_SENTINEL, form).split(_SENTINEL)
            self._cache[key] = (parts[0], parts[1]) if len(parts) == 2 else None
        return self._cache[key]

    # -- answers -----------------------------------------------------------------------------
    def parse_answer(self, text: str, form: str) -> str | None:
        """The label a free answer gives, or None when no rule accepts it (never a default class).

        An answer is read up to the reasoning marker: first as one of the task's answer sentences
        (any form, case and spacing ignored), then by the task's cues, the earliest match winning.
        For a multi-label task this is the first label named; see `parse_labels` for all of them.
        """
        self._check_form(form)
        head = _answer_head(text, self.reasoning_marker)
        if not head:
            return None
        exact = self._exact_answers().get(head.rstrip(". "))
        if exact is not None:
            return exact
        found = self._cue_positions(head)
        return min(found, key=found.get) if found else None

    def parse_labels(self, text: str, form: str) -> tuple[str, ...]:
        """Every label a free answer names, in the task's label order (for multi-label tasks)."""
        self._check_form(form)
        found = self._cue_positions(_answer_head(text, self.reasoning_marker))
        return tuple(label for label in self.labels if label in found)

    def _cue_positions(self, head: str) -> dict[str, int]:
        found = {}
        for label in self.labels:
            starts = [m.start() for cue in self.cues.get(label, ()) if (m := cue.search(head))]
            if starts:
                found[label] = min(starts)
        return found

    def _exact_answers(self) -> dict[str, str]:
        if "exact" not in self._cache:
            self._cache["exact"] = {
                _normalize(sentence).rstrip(". "): label
                for by_label in self.answers.values()
                for label, sentence in by_label.items()
            }
        return self._cache["exact"]

    def _template(self, form: str) -> jinja2.Template:
        self._check_form(form)
        key = ("template", form)
        if key not in self._cache:
            name, source = self.templates[form]
            try:
                self._cache[key] = _ENV.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise MentalEdgeError(f"template {name}, line {exc.lineno}: {exc.message}") from None
        return self._cache[key]

    def _check_form(self, form: str) -> None:
        if form not in self.forms:
            raise MentalEdgeError(f"task {self.name} has no {form!r} form (forms: {', '.join(self.forms)})")


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _answer_head(text: str, marker: str) -> str:
    """The answer before its reasoning, lower-cased, spaces collapsed, leading quotes/bullets dropped."""
    cut = text.lower().find(marker.lower())
    head = text if cut < 0 else text[:cut]
    return _normalize(head).lstrip("\"'*->:` ")


class TaskSet:
    """The tasks known to this run, looked up by name (case-insensitive)."""

    def __init__(self, tasks: list[Task]):
        self._tasks = {t.name.lower(): t for t in tasks}

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self, language: str | None = None) -> list[str]:
        return [t.name for t in self if language is None or t.language == language]

    def get(self, name: str, language: str | None = None) -> list[Task]:
        """Tasks for a name: one task, a family (`Irf` -> both questions), or `all` (of a language)."""
        key = name.strip().lower()
        if key == "all":
            return [t for t in self if language is None or t.language == language]
        if key in self._tasks:
            return [self._tasks[key]]
        family = [t for t in self if t.family.lower() == key]
        if family:
            return family
        known = ", ".join(self.names(language))
        raise MentalEdgeError(f"unknown task {name!r}; known tasks: all, {known}")

    def task(self, name: str) -> Task:
        """Exactly one task (a family with several questions is refused, naming them)."""
        tasks = self.get(name)
        if len(tasks) != 1:
            raise MentalEdgeError(f"{name!r} names {len(tasks)} tasks: {', '.join(t.name for t in tasks)}")
        return tasks[0]

    def parse_query(self, query: str, form: str | None = None) -> tuple[Task, str] | None:
        """Recognise a query written by a task's template; returns (task, post) or None."""
        found = self.detect(query, form)
        return (found[0], found[2]) if found else None

    def detect(self, query: str, form: str | None = None) -> tuple[Task, str, str] | None:
        """Like parse_query, also giving the form: (task, form, post). The longest frame wins."""
        best, best_len = None, -1
        for task in self:
            if not task.recognize:
                continue
            for f in task.forms if form is None else [form] if form in task.forms else []:
                frame = task.frame(f)
                if frame is None:
                    continue
                before, after = frame
                fits = len(query) >= len(before) + len(after)
                if fits and query.startswith(before) and query.endswith(after) and len(before + after) > best_len:
                    best, best_len = (task, f, query[len(before) : len(query) - len(after)]), len(before + after)
        if best is not None and best[0].render(best[2], best[1]) != query:
            return None
        return best


def load_tasks(extra_dir: str | os.PathLike | None = None) -> TaskSet:
    """The package's tasks, then additions and overrides from `extra_dir` (else $MENTAL_EDGE_PROMPTS)."""
    user_dir = extra_dir if extra_dir is not None else os.environ.get("MENTAL_EDGE_PROMPTS") or None
    families, templates = read_definitions(Path(user_dir) if user_dir else None)
    tasks = []
    for definition in families:
        tasks.extend(_family_tasks(definition, templates))
    return TaskSet(tasks)


def _family_tasks(d: dict, templates: dict[str, tuple[str, str]]) -> list[Task]:
    """One Task per question of a validated family definition."""
    forms = tuple(f for f in FORMS if f in d["answers"])
    subtasks = d.get("subtasks") or {"": d["questions"]}
    cues = {label: tuple(re.compile(c, re.IGNORECASE) for c in d["cues"].get(label, ())) for label in d["labels"]}
    tasks = []
    for suffix, questions in subtasks.items():
        tasks.append(
            Task(
                name=f"{d['family']}-{suffix}" if suffix else d["family"],
                family=d["family"],
                language=d["language"],
                labels=tuple(d["labels"]),
                forms=forms,
                multi_label=d["multi_label"],
                recognize=d["recognize"],
                reasoning_marker=d["reasoning_marker"],
                questions=dict(questions),
                answers=d["answers"],
                templates={f: templates[d["templates"][f]] for f in forms},
                cues=cues,
            )
        )
    return tasks


def define_task(
    name: str,
    labels: Sequence[str],
    template: str,
    *,
    question: str = "",
    answers: Mapping[str, str] | None = None,
    cues: Mapping[str, Sequence[str]] | None = None,
    language: str = "en",
    form: str = "instruction",
) -> Task:
    """A task defined in code, checked as a task file is (prompts/README.md): `template` is a Jinja template
    rendered in the sandbox with `post` and `question`; `answers` the sentence the model is scored on for each
    label (default: the label itself); `cues` regular expressions that find a label in a free answer. A problem
    is one line naming the field."""
    definition = {
        "family": name,
        "language": language,
        "labels": list(labels) if not isinstance(labels, str) else labels,
        "templates": {form: f"{name}.j2"},
        "questions": {form: question},
        "answers": {form: dict(answers) if answers is not None else {label: label for label in labels}},
    }
    if cues is not None:
        definition["cues"] = {label: list(patterns) for label, patterns in cues.items()}
    if not isinstance(template, str):
        raise MentalEdgeError(f"task {name}: the template must be a string")
    checked = check_definition(definition, f"task {name}", {f"{name}.j2": template})
    (task,) = _family_tasks(checked, {f"{name}.j2": (f"{name}.j2", template)})
    task.render("", form)  # a template that does not compile or render is refused now, not at the first post
    return task
