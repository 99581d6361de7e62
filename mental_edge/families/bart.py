"""BART (MentalBART, on CTranslate2): English, trained on the IMHI completion form, the raw query as the
encoder's source; no chat layout of its own."""

from __future__ import annotations

from mental_edge.families.base import RAW, Family, HubModel

FAMILY = Family(
    "bart",
    language="en",
    form="completion",
    query_format=RAW,
    engine="ctranslate2",
    checkpoints={"BartForConditionalGeneration": "bart"},
    hub_models=(
        HubModel("mentalbart", "Tianlin668/MentalBART", None, outtype="int8", folder=True),
        # BARTScore's base (mental-edge score --scorer bart-large-cnn): float32, as the benchmark scores
        HubModel("bart-large-cnn", "facebook/bart-large-cnn", None, outtype="f32", folder=True),
    ),
)
