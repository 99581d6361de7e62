"""T5 (MentalT5): English, trained on the IMHI completion form, the raw query as the encoder's source; no chat
layout of its own."""

from __future__ import annotations

from mental_edge.families.base import RAW, Family, HubModel

FAMILY = Family(
    "t5",
    language="en",
    form="completion",
    query_format=RAW,
    engine="llama.cpp-t5",
    checkpoints={"T5ForConditionalGeneration": "seq2seq"},
    hub_models=(HubModel("mentalt5", "Tianlin668/MentalT5", "Q8_0"),),
)
