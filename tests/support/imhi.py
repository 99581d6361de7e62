"""Small IMHI data folders cut from the real test set (../shared/data/imhi) for tests."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path


def imhi_subset(imhi_dir: Path, folder: Path, families: Iterable[str] = ("DR",), rows: int = 4) -> Path:
    """`folder` holding, for each family, the header and the first `rows` rows of its instruction-form file."""
    folder.mkdir(parents=True, exist_ok=True)
    for family in families:
        with open(imhi_dir / "test_instruction" / f"{family}.csv", newline="", encoding="utf-8") as src:
            kept = list(csv.reader(src))[: rows + 1]
        with open(folder / f"{family}.csv", "w", newline="", encoding="utf-8") as dst:
            csv.writer(dst).writerows(kept)
    return folder
