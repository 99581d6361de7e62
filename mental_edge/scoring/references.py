"""Reference explanations of IMHI rows: the gold answers' reasoning, and the expert-written set where it is at hand.

The reference of a row is the text of its gold answer (column `gpt-3.5-turbo`) after the task's reasoning marker
(`Reasoning:`, its first occurrence), stripped; a row whose gold has no marker has no reference. Rows are keyed by
(task, row id) as `analyze` and `eval` number them (the row number in the file unless an id column says otherwise).

The expert set (the MentaLLaMA paper's expert-written explanations, 35 rows per task) is a folder `expert/` beside
the data's folder, or the data itself when it lies in `expert/` (then its golds are the experts' and the set is
named "expert"). Expert rows are matched to data rows by their post (whitespace runs made one space): only some
tasks' expert posts are in the test split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mental_edge.errors import MentalEdgeError
from mental_edge.io.readers import input_files, is_imhi_file, read_file
from mental_edge.prompting import Task, TaskSet

EXPERT = "expert"
GOLD = "gold"


@dataclass
class References:
    data: Path
    name: str  # the data's own set: "gold", or "expert" for data inside expert/
    rows: dict[tuple[str, str], str | None] = field(default_factory=dict)  # (task, id) -> reference (None: no marker)
    expert: dict[tuple[str, str], str] = field(default_factory=dict)  # rows the expert set also explains
    expert_folder: Path | None = None

    def tasks(self) -> set[str]:
        return {task for task, _ in self.rows}


def reasoning(answer: str | None, task: Task) -> str | None:
    """The explanation in a gold answer: its text after the first reasoning marker, stripped."""
    if not answer or task.reasoning_marker not in answer:
        return None
    return answer.split(task.reasoning_marker, 1)[1].strip() or None


def load_references(data, taskset: TaskSet) -> References:
    """The references of every IMHI row of `data` (a file or a folder of them), with the expert set's matches."""
    data = Path(data)
    folder = data if data.is_dir() else data.parent
    refs = References(data, EXPERT if folder.name == EXPERT else GOLD)
    posts: dict[tuple[str, str], tuple[str, str]] = {}  # (task, post) -> (task, id)
    for path in input_files(data):
        for task, row_id, post, answer in _imhi_rows(path, taskset):
            key = (task.name, row_id)
            if key in refs.rows:
                raise MentalEdgeError(f"{path}: row {row_id} of task {task.name} is also in another file of {data}")
            refs.rows[key] = reasoning(answer, task)
            posts.setdefault((task.name, _squeeze(post)), key)
    if not refs.rows:
        raise MentalEdgeError(f"{data}: no IMHI rows (query and gpt-3.5-turbo columns) of a known task")
    expert = folder.parent / EXPERT
    if refs.name == GOLD and expert.is_dir():
        refs.expert_folder = expert
        for path in input_files(expert):
            for task, _row_id, post, answer in _imhi_rows(path, taskset):
                key = posts.get((task.name, _squeeze(post)))
                text = reasoning(answer, task)
                if key is not None and text is not None:
                    refs.expert[key] = text
    return refs


def _imhi_rows(path: Path, taskset: TaskSet) -> Iterable[tuple[Task, str, str, str | None]]:
    if not is_imhi_file(path):
        return
    for row in read_file(path):
        found = taskset.detect(row.text) if row.text is not None else None
        if found is not None:
            task, _form, post = found
            yield task, row.id, post, row.gold


def _squeeze(text: str) -> str:
    return " ".join(text.split())
