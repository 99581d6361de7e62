"""`verify`: does a model file behave as the model it was converted from (or as another file of it)?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mental_edge import store
from mental_edge.api.loading import Say
from mental_edge.errors import MentalEdgeError
from mental_edge.verification import DEFAULT_ROWS, imhi_sample, verify_against, verify_reference
from mental_edge.verification.measures import Report as VerifyReport

__all__ = ["VerifyReport", "imhi_sample", "verify"]


def verify(
    model: str | Path,
    *,
    reference: str | Path | None = None,
    against: str | Path | None = None,
    data: str | Path | None = None,
    rows: int = DEFAULT_ROWS,
    tasks: Sequence[str] | None = None,
    device: str | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    gpu_layers: int | None = None,
    say: Say | None = None,
) -> VerifyReport:
    """Check `model` (a store name or path) against the Hugging Face checkpoint it was converted from
    (`reference`, a folder; needs the `verify` extra) or against another model file (`against`), on `rows` IMHI
    rows per task of `data` (default: the sample shipped with the package): next-token top-1 agreement, KL
    divergence, top-5 logits, labels, and a verdict (`.passed`, `.lines()`)."""
    if (reference is None) == (against is None):
        raise MentalEdgeError("give one of --reference CHECKPOINT_DIR or --against OTHER_MODEL")
    path = store.resolve_model(str(model))
    data = data if data is not None else imhi_sample()
    options = {"threads": threads, "gpu_layers": gpu_layers}
    if reference is not None:
        return verify_reference(
            path, reference, data, tasks=tasks, rows=rows, device=device, dtype=dtype, engine_options=options, say=say
        )
    other = store.resolve_model(str(against))
    return verify_against(path, other, data, tasks=tasks, rows=rows, engine_options=options, say=say)
