"""Model families the runtime knows, keyed by the model's architecture (GGUF `general.architecture`; "bart"
for a CTranslate2 folder).

Each module gives `FAMILY`, a `Family`: the language of the tasks it runs by default, the task form it answers,
how it takes one query and, for a model file without a chat template, its chat layout. prompt_format.py,
chat_format.py and every "which language" question ask here. Adding a family is one module and one line here.
"""

from __future__ import annotations

from mental_edge.families import bart, chatglm, llama, t5
from mental_edge.families.base import RAW, ChatFormat, Family, Message, QueryFormat

__all__ = ["FAMILIES", "OTHER", "ChatFormat", "Family", "Message", "QueryFormat", "family_for", "query_formats"]

FAMILIES: dict[str, Family] = {
    "llama": llama.FAMILY,
    "chatglm": chatglm.FAMILY,
    "t5": t5.FAMILY,
    "bart": bart.FAMILY,
}

# An architecture not listed: English, the instruction form on the raw query; chat only through the file's template.
OTHER = Family("other", language="en", form="instruction", query_format=RAW)


def family_for(architecture: str) -> Family:
    return FAMILIES.get(architecture, OTHER)


def query_formats() -> dict[str, QueryFormat]:
    """Every family's query format by name (for --prompt-format), the raw one first."""
    formats = {RAW.name: RAW}
    for family in FAMILIES.values():
        formats.setdefault(family.query_format.name, family.query_format)
    return formats
