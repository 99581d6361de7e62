"""BART (MentalBART, on CTranslate2): English, trained on the IMHI completion form, the raw query as the
encoder's source; no chat layout of its own."""

from __future__ import annotations

from mental_edge.families.base import RAW, Family

FAMILY = Family("bart", language="en", form="completion", query_format=RAW)
