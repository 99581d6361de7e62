"""mental-edge: the open mental-health analysis models, run locally on llama.cpp.

For non-clinical research only: outputs are model opinions, not diagnoses.

    import mental_edge
    with mental_edge.load("smollm2") as model:
        records = model.analyze(["I can't sleep and nothing feels worth doing."], tasks="DR")

The names below are the public API (docs/python-api.md); they are imported on first use, so that importing a
submodule (the CLI's start-up, a worker) does not load them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mental_edge.version import __version__

if TYPE_CHECKING:
    from mental_edge.api.checks import VerifyReport, imhi_sample, verify
    from mental_edge.api.evaluate import Report, evaluate, score_explanations, write_report
    from mental_edge.api.loading import engine_loader
    from mental_edge.api.model import Model, load
    from mental_edge.api.records import Record, records_to_frame
    from mental_edge.api.tasks import tasks
    from mental_edge.engine import Engine, Sampling
    from mental_edge.errors import MentalEdgeError
    from mental_edge.prompting import Task, define_task
    from mental_edge.prompting.chat_format import Message
    from mental_edge.store.pull import pull

_PUBLIC = {
    "load": "mental_edge.api.model",
    "Model": "mental_edge.api.model",
    "Record": "mental_edge.api.records",
    "records_to_frame": "mental_edge.api.records",
    "evaluate": "mental_edge.api.evaluate",
    "Report": "mental_edge.api.evaluate",
    "write_report": "mental_edge.api.evaluate",
    "score_explanations": "mental_edge.api.evaluate",
    "verify": "mental_edge.api.checks",
    "imhi_sample": "mental_edge.api.checks",
    "VerifyReport": "mental_edge.api.checks",
    "engine_loader": "mental_edge.api.loading",
    "pull": "mental_edge.store.pull",
    "tasks": "mental_edge.api.tasks",
    "define_task": "mental_edge.prompting",
    "Task": "mental_edge.prompting",
    "Message": "mental_edge.prompting.chat_format",
    "Engine": "mental_edge.engine",
    "Sampling": "mental_edge.engine",
    "MentalEdgeError": "mental_edge.errors",
}

__all__ = [
    "Engine",
    "Message",
    "MentalEdgeError",
    "Model",
    "Record",
    "Report",
    "Sampling",
    "Task",
    "VerifyReport",
    "__version__",
    "define_task",
    "engine_loader",
    "evaluate",
    "imhi_sample",
    "load",
    "pull",
    "records_to_frame",
    "score_explanations",
    "tasks",
    "verify",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mental_edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
