"""How a model wants a single query laid out, and which task form it was trained on.

MentaLLaMA was evaluated on the raw IMHI query after BOS (no [INST] wrapper); GLM-4 models take
`[gMASK]<sop><|user|>\\n{query}<|assistant|>`. The wrapper's control tokens are special segments; the query,
which holds the post, never is.
"""

from __future__ import annotations

from dataclasses import dataclass

from mental_edge.engine import ModelInfo, Segment
from mental_edge.errors import MentalEdgeError


@dataclass(frozen=True)
class QueryFormat:
    name: str
    before: tuple[Segment, ...]
    after: tuple[Segment, ...]
    add_bos: bool  # add BOS where the model file asks for it
    separator: str  # between the wrapped query and an answer the model is scored on or continues

    def segments(self, query: str, answer: str | None = None) -> list[Segment]:
        """The prompt for `query`, followed by `answer` when the answer is being scored or continued."""
        parts = [*self.before, Segment(query), *self.after]
        if answer is not None:
            parts.append(Segment(self.separator + answer))
        return parts


FORMATS = {
    "raw": QueryFormat("raw", (), (), add_bos=True, separator=" "),
    "glm": QueryFormat(
        "glm",
        (Segment("[gMASK]<sop><|user|>", special=True), Segment("\n")),
        (Segment("<|assistant|>", special=True),),
        add_bos=False,
        separator="\n",
    ),
}


def query_format_for(info: ModelInfo, name: str | None = None) -> QueryFormat:
    """The named format, else the one of the model's family."""
    if name is not None:
        if name not in FORMATS:
            raise MentalEdgeError(f"unknown prompt format {name!r}; known: {', '.join(FORMATS)}")
        return FORMATS[name]
    if info.architecture == "chatglm":
        return FORMATS["glm"]
    return FORMATS["raw"]


def form_for(info: ModelInfo, language: str) -> str:
    """The task form a model answers: Chinese tasks in their own form; encoder-decoder models were trained on
    the IMHI completion form, decoder-only chat models on the instruction form."""
    if language == "zh":
        return "chinese"
    if info.architecture in ("t5", "bart"):
        return "completion"
    return "instruction"
