"""Opening a model by store name or path with a run's settings: the one way every client opens one.

`engine_loader` is the extension point for engines of one's own: inside its block every model is opened by the
given function instead of the built-in backends (the test suite's fake engine goes in through it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mental_edge import store
from mental_edge.engine import Engine, load_engine
from mental_edge.engine.threads import choose_threads

EngineLoader = Callable[..., Engine]
Say = Callable[[str], None]

_loaders: list[EngineLoader] = [load_engine]


@contextmanager
def engine_loader(loader: EngineLoader) -> Iterator[None]:
    """Within the block, open every model with `loader(path, *, n_ctx, threads, gpu_layers, slots, exact, name)`
    instead of the built-in backends (they are back when the block ends)."""
    _loaders.append(loader)
    try:
        yield
    finally:
        _loaders.remove(loader)


def find_model(model: str | Path | None) -> tuple[Path, store.ModelEntry | None]:
    """The file (or folder) of a store name or a path, and its store entry if it has one (checked to be the file
    that entered the store: one line saying what changed otherwise); None: the store's only model."""
    entry: store.ModelEntry | None
    if model is None:
        entry = store.default_model()
        path = store.model_path(entry)
    else:
        path = store.resolve_model(str(model))
        entry = None if Path(model).expanduser().exists() else store.find_model(str(model))
    if entry is not None:
        entry = store.check_unchanged(entry)
    return path, entry


def open_engine(
    model: str | Path | None = None,
    *,
    n_ctx: int | None = None,
    threads: int | None = None,
    gpu_layers: int | None = None,
    slots: int | None = None,
    exact: bool = False,
    say: Say | None = None,
    allow_architectures: Sequence[str] = (),
) -> Engine:
    """Load a model by store name or path (a GGUF file, a CTranslate2 folder); with none, the store's only model.

    Threads default to the cores free now; `say` hears a line when the machine's load changed that or questions
    a `threads` given (engine/threads.py). A store entry's hash and `pull --verify` verdict go into the engine's
    `info` and `settings`, so every record carries them. `allow_architectures`: GGUF architectures to run beyond
    the built-in families (engine/file_check.py; passed to the loader only when some are named)."""
    path, entry = find_model(model)
    choice = choose_threads(threads)  # after the model is found: a wrong name is the only line said
    if choice.note and say is not None:
        say(f"mental-edge: {choice.note}")
    options: dict[str, Any] = {"n_ctx": n_ctx, "threads": choice.threads, "gpu_layers": gpu_layers, "exact": exact}
    if allow_architectures:
        options["allow_architectures"] = tuple(allow_architectures)
    engine = _loaders[-1](path, slots=slots, name=entry.name if entry else None, **options)
    if entry is not None and entry.sha256:
        engine.info.sha256 = entry.sha256  # the store hashed the file once; no need to read gigabytes again
    if entry is not None and entry.verification:  # `pull --verify`'s verdict, carried into every record's `run`
        engine.settings["verified"] = entry.verified_text()
    return engine
