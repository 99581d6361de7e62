"""The published MentalBERT classifiers (`--classifiers DIR`, one folder per dataset as MentalLLaMA's
`label_inference.py` expects: DIR/DR, DIR/SAD, ...): free answers labelled as the benchmark labels them, and
label-explanation consistency (does the explanation argue for the record's label: the classifier's label of the
explanation equals it). A folder holds a Hugging Face BertForSequenceClassification checkpoint (converted once and
cached) or a converted classifier; it runs on CTranslate2 with the head in numpy, no torch."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

import numpy as np

from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import Task, TaskSet
from mental_edge.prompting.classifiers import classifier_labels
from mental_edge.report.stats import RESAMPLES, SEED, interval, resampled_sums
from mental_edge.store.pull import classifier_folder


class Classifiers:
    def __init__(self, root, taskset: TaskSet, *, threads: int | None = None, say=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MentalEdgeError(f"{self.root}: not a folder of classifiers (one folder per dataset: DR, SAD, ...)")
        self._taskset, self._threads, self._say = taskset, threads, say
        self._loaded: dict[str, object] = {}

    def source(self, task_name: str) -> Path:
        """The folder of a task's classifier (named by the task's family: the benchmark's dataset)."""
        return self.root / self._task(task_name).family

    def available(self, task_name: str) -> bool:
        return task_name in self._taskset.names() and (self.root / self._task(task_name).family).is_dir()

    def label(self, task_name: str, texts: Sequence[str]) -> list[tuple[str, dict[str, float]]]:
        """Each text's label and the probability of every label, by the task's classifier."""
        task = self._task(task_name)
        classifier = self._classifier(task)
        labels = classifier_labels(task)
        probs = classifier.probabilities(list(texts)) if texts else np.zeros((0, len(labels)))
        return [(labels[int(np.argmax(p))], {k: float(v) for k, v in zip(labels, p)}) for p in probs]

    def _task(self, name: str) -> Task:
        return self._taskset.task(name)

    def _classifier(self, task: Task):
        if task.family not in self._loaded:
            from mental_edge.engine.ctranslate2 import SequenceClassifier

            source = self.root / task.family
            _check_classes(source, _declared_classes(source), task)  # before a conversion
            classifier = SequenceClassifier(classifier_folder(source, self._say), threads=self._threads)
            _check_classes(source, classifier.num_labels, task)
            self._loaded[task.family] = classifier
        return self._loaded[task.family]


def _declared_classes(folder: Path) -> int | None:
    """The class count a checkpoint's config.json (or a converted folder's mental_edge.json) declares."""
    import json

    for name, keys in (("mental_edge.json", ("num_labels",)), ("config.json", ("id2label", "num_labels"))):
        try:
            meta = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in keys:
            value = meta.get(key) if isinstance(meta, dict) else None
            if value:
                return len(value) if isinstance(value, dict) else int(value)
    return None


def _check_classes(folder: Path, count: int | None, task: Task) -> None:
    labels = classifier_labels(task)
    if count is not None and count != len(labels):
        raise MentalEdgeError(
            f"{folder}: the classifier has {count} classes, task {task.name} has {len(labels)} labels "
            f"({', '.join(labels)})"
        )


def label_free_answers(rows_by_task: Mapping[str, Sequence[MutableMapping]], classifiers: Classifiers) -> int:
    """Rows of free answers ({"answer", "pred", "probabilities"}) relabelled by their task's classifier, as the
    benchmark labels free answers; rows without an answer keep theirs. Returns the number relabelled."""
    done = 0
    for task, rows in rows_by_task.items():
        if not classifiers.available(task):
            continue
        answered = [r for r in rows if r.get("answer")]
        for row, (label, probabilities) in zip(answered, classifiers.label(task, [r["answer"] for r in answered])):
            row["pred"], row["probabilities"] = label, probabilities
            done += 1
    return done


def consistency(
    rows: Sequence[Mapping], task: str, classifiers: Classifiers, *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[dict | None, list[str | None]]:
    """Share of rows with a label and an explanation whose explanation the classifier gives that label, with its
    interval, and each row's explanation label (None where not classified)."""
    if not classifiers.available(task):
        return None, [None] * len(rows)
    judged = [i for i, r in enumerate(rows) if r.get("pred") and (r.get("explanation") or "").strip()]
    labels: list[str | None] = [None] * len(rows)
    for i, (label, _) in zip(judged, classifiers.label(task, [rows[i]["explanation"].strip() for i in judged])):
        labels[i] = label
    if not judged:
        return None, labels
    agree = np.array([[float(labels[i] == rows[i]["pred"])] for i in judged])
    samples = resampled_sums(agree, resamples=resamples, seed=seed)[:, 0] / len(judged)
    figure = {"rows": len(judged), "agreement": interval(float(agree.mean()), samples).as_dict(),
              "classifier": str(classifiers.source(task))}  # fmt: skip
    return figure, labels
