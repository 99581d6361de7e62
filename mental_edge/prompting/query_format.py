"""How a model wants a single query laid out, and which task form it answers: both the model family's
(families/), or the query format a run names.

MentaLLaMA was evaluated on the raw IMHI query after BOS (no [INST] wrapper); GLM-4 models take
`[gMASK]<sop><|user|>\\n{query}<|assistant|>`. The wrapper's control tokens are special segments; the query,
which holds the post, never is.
"""

from __future__ import annotations

from mental_edge.engine import ModelInfo
from mental_edge.errors import MentalEdgeError
from mental_edge.families import QueryFormat, family_for, query_formats

__all__ = ["FORMATS", "QueryFormat", "form_for", "query_format_for"]

FORMATS: dict[str, QueryFormat] = query_formats()


def query_format_for(info: ModelInfo, name: str | None = None) -> QueryFormat:
    """The named format, else the one of the model's family."""
    if name is not None:
        if name not in FORMATS:
            raise MentalEdgeError(f"unknown prompt format {name!r}; known: {', '.join(FORMATS)}")
        return FORMATS[name]
    return family_for(info.architecture).query_format


def form_for(info: ModelInfo, language: str) -> str:
    """The task form a model answers: Chinese tasks in their own form, English ones in the form its family
    was trained on (encoder-decoder models the IMHI completion form, decoder-only chat models the instruction
    form)."""
    if language == "zh":
        return "chinese"
    return family_for(info.architecture).form
