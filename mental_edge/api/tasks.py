"""The tasks a user can run: the package's, and those of a prompts folder."""

from __future__ import annotations

from pathlib import Path

from mental_edge.prompting import Task, load_tasks


def tasks(prompts: str | Path | None = None, *, language: str | None = None) -> list[Task]:
    """Every task (`language`: "en" or "zh" only), with those of a `prompts` folder added or overriding."""
    return load_tasks(prompts).get("all", language=language)
