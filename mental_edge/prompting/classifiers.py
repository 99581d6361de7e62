"""The published MentalBERT classifiers of the IMHI benchmark (hub repos `Tianlin668/<dataset>`, one per dataset):
the order of their output classes, as MentalLLaMA's `src/label_inference.py` (`get_dict`) reads them, in this
package's label names. A classifier folder is named by the dataset, which is the task's family here (`Irf` serves
both Irf questions, `MultiWD` all six wellness dimensions)."""

from __future__ import annotations

from mental_edge.prompting import Task

YES_NO = ("no", "yes")
PUBLISHED_ORDER: dict[str, tuple[str, ...]] = {
    "CAMS": ("none", "bias or abuse", "jobs and career", "medication", "relationship", "alienation"),
    "CLP": YES_NO,
    "DR": YES_NO,
    "dreaddit": YES_NO,
    "Irf": YES_NO,
    "loneliness": YES_NO,
    "MultiWD": YES_NO,
    "SAD": (
        "school",
        "financial problem",
        "family issues",
        "social relationships",
        "work",
        "health issues",
        "emotional turmoil",
        "everyday decision making",
        "other causes",
    ),  # fmt: skip
    "swmh": ("depression", "suicide", "anxiety", "bipolar disorder", "no mental disorder symptoms"),
    "t-sid": ("depression", "suicide or self-harm tendency", "ptsd", "no mental disorders"),
}


def classifier_labels(task: Task) -> tuple[str, ...]:
    """The task's labels in its classifier's output order: the published order for the benchmark's datasets, the
    task's own order for any other task."""
    order = PUBLISHED_ORDER.get(task.family)
    return order if order is not None and set(order) == set(task.labels) else tuple(task.labels)
