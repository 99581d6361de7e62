"""Model families, keyed by the model file's architecture (GGUF `general.architecture`; "bart" for a CTranslate2
folder): the one place that knows them.

Each module gives `FAMILY`, a `Family` (base.py): the language of the tasks it runs by default, the task form it
answers, how it takes one query, its chat layout for a model file without a chat template, which engine runs its
files, the checkpoint layouts it converts from (and how `verify` loads them) and the short names `pull` knows.
Every other table derives from this registry (`load_engine`, `verify`'s reference layouts, `pull`'s names).
Adding a family is one module and one line here, plus its converter (docs/architecture.md).
"""

from __future__ import annotations

from mental_edge.families import bart, chatglm, llama, t5
from mental_edge.families.base import RAW, ChatFormat, Family, FileShape, HubModel, Message, QueryFormat

__all__ = [
    "FAMILIES",
    "OTHER",
    "ChatFormat",
    "Family",
    "FileShape",
    "HubModel",
    "Message",
    "QueryFormat",
    "checkpoint_layouts",
    "family_for",
    "hub_models",
    "query_formats",
]

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


def checkpoint_layouts() -> dict[str, tuple[str, str]]:
    """config.json `architectures[0]` -> (the family it converts to, how `verify` loads it in transformers)."""
    return {arch: (family.name, kind) for family in FAMILIES.values() for arch, kind in family.checkpoints.items()}


def hub_models() -> dict[str, HubModel]:
    """Every family's known hub models by short name."""
    return {m.short: m for family in FAMILIES.values() for m in family.hub_models}
