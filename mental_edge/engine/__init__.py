"""The one interface over the inference backends; `load_engine` picks the backend by the model file."""

from __future__ import annotations

from pathlib import Path

from mental_edge.engine.base import (
    IDLE,
    Engine,
    Generation,
    ModelInfo,
    PromptText,
    Request,
    RequestRunner,
    Result,
    Sampling,
    Segment,
    Seq2SeqPrompt,
    TokenLogprob,
)
from mental_edge.errors import MentalEdgeError

__all__ = [
    "IDLE",
    "Engine",
    "Generation",
    "ModelInfo",
    "PromptText",
    "Request",
    "RequestRunner",
    "Result",
    "Sampling",
    "Segment",
    "Seq2SeqPrompt",
    "TokenLogprob",
    "load_engine",
]


def load_engine(
    path: str | Path,
    *,
    n_ctx=None,
    threads=None,
    gpu_layers=None,
    name=None,
    slots=None,
    exact=None,
    allow_architectures=(),
) -> Engine:
    """Open a model: a GGUF file runs on llama.cpp (T5 through its encoder-decoder path), a CTranslate2 model
    folder (MentalBART) on CTranslate2. `exact`: batched results equal the one-at-a-time ones to the bit (llama.cpp
    decoder-only models; engine/llamacpp/decoder.py DEFAULT_EXACT). Before any backend opens it, the file passes
    engine/file_check.py: an architecture outside the built-in families runs only when named in
    `allow_architectures` (then recorded in the engine's settings, so in every record's `run`)."""
    from mental_edge.engine.file_check import check_model_file
    from mental_edge.families import family_for

    path = Path(path)
    if not path.exists():
        raise MentalEdgeError(f"{path}: no such model file")
    if path.is_dir() and not (path / "model.bin").is_file():
        raise MentalEdgeError(f"{path}: a folder is not a model this installation can run (expected a .gguf file)")
    allowed = sorted(set(allow_architectures))
    architecture = check_model_file(path, allowed)
    engine = _open(
        path, architecture, family_for(architecture or "").engine, n_ctx, threads, gpu_layers, name, slots, exact
    )
    if allowed:
        engine.settings["allow_architectures"] = allowed
    return engine


def _open(path, architecture, backend, n_ctx, threads, gpu_layers, name, slots, exact) -> Engine:
    if architecture is None:
        from mental_edge.engine.ctranslate2 import CT2Engine

        return CT2Engine(path, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, name=name)
    if backend == "llama.cpp-t5":
        from mental_edge.engine.llamacpp.t5 import LlamaT5Engine

        return LlamaT5Engine(path, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, name=name)
    from mental_edge.engine.llamacpp.decoder import LlamaEngine

    return LlamaEngine(path, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, name=name, slots=slots, exact=exact)
