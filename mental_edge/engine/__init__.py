"""The one interface over the inference backends; `load_engine` picks the backend by the model file."""

from __future__ import annotations

from pathlib import Path

from mental_edge.engine.base import Engine, Generation, ModelInfo, Sampling, Segment
from mental_edge.errors import MentalEdgeError

__all__ = ["Engine", "Generation", "ModelInfo", "Sampling", "Segment", "load_engine"]


def load_engine(path: str | Path, *, n_ctx=None, threads=None, gpu_layers=None, name=None) -> Engine:
    """Open a model file: a GGUF file runs on llama.cpp."""
    path = Path(path)
    if path.is_file():
        from mental_edge.engine.llama import LlamaEngine

        return LlamaEngine(path, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, name=name)
    if path.is_dir():
        raise MentalEdgeError(f"{path}: a folder is not a model this installation can run (expected a .gguf file)")
    raise MentalEdgeError(f"{path}: no such model file")
