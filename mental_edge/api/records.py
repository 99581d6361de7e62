"""Records as Python objects: what `Model.analyze` returns, one per post and task, the same fields as the
records `mental-edge analyze` writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True)
class Record:
    """One post's result for one task. `label` is None when the row is flagged (`flags` says why);
    `probabilities` maps every label to its probability (scored mode); `explanation` is the model's reasoning
    after the label (None without explanations); `gold` the expected label of an IMHI row; `run` what produced it
    (model, its sha256, quantization, engine, settings)."""

    id: str
    task: str
    label: str | None
    probabilities: dict[str, float] | None
    explanation: str | None
    answer: str | None = None  # a free answer as the model wrote it (free mode)
    gold: str | None = None
    flags: list[str] = field(default_factory=list)
    template_sha256: str | None = None
    run: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Record:
        return cls(**{name: record.get(name) for name in cls.__dataclass_fields__} | {"flags": record["flags"] or []})

    def to_dict(self) -> dict[str, Any]:
        """The record as `mental-edge analyze` writes it (its fields in the same order)."""
        return asdict(self)


def records_to_frame(records: Iterable[Record]) -> pandas.DataFrame:
    """A pandas DataFrame, one row per record: id, task, label, one `p(<label>)` column per label, explanation,
    flags (joined by '; '), gold, and the model's name and quantization (pandas is imported here only)."""
    import pandas

    rows = []
    for r in records:
        row: dict[str, Any] = {"id": r.id, "task": r.task, "label": r.label}
        row |= {f"p({label})": p for label, p in (r.probabilities or {}).items()}
        row |= {"explanation": r.explanation, "flags": "; ".join(r.flags), "gold": r.gold}
        row |= {"model": r.run.get("model"), "quantization": r.run.get("quantization")}
        rows.append(row)
    return pandas.DataFrame(rows)
