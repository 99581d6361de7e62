"""Options shared by every command that loads a model, and the one way they open it."""

from __future__ import annotations

import functools

import click

from mental_edge import store
from mental_edge.engine import Engine, Sampling, load_engine
from mental_edge.engine import threads as cpu


def model_options(func=None, *, slots: bool = True):
    """The one set of model options, for every command that loads a model: -m/--model, --ctx, --threads,
    --gpu-layers and, where requests run side by side (`slots=True`), --slots and --sequential. The command
    gets them as `model_opts`, the keywords of `open_engine`. Use as `@model_options` or
    `@model_options(slots=False)`."""
    if func is None:
        return functools.partial(model_options, slots=slots)
    takes_slots = slots  # the wrapper's own `slots` is the option's value
    options = [*_MODEL_OPTIONS, *(_SLOT_OPTIONS if takes_slots else ())]

    @functools.wraps(func)
    def wrapper(*args, model, n_ctx, threads, gpu_layers, slots=None, sequential=False, exact=False, **kwargs):
        opts = {"model": model, "n_ctx": n_ctx, "threads": threads, "gpu_layers": gpu_layers}
        if takes_slots:
            opts["slots"] = 1 if sequential else slots
            opts["exact"] = exact
        return func(*args, model_opts=opts, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


_MODEL_OPTIONS = (
    click.option(
        "--model",
        "-m",
        "model",
        default=None,
        help="Store name or path of a model file (default: the store's only model).",
    ),
    click.option(
        "--ctx",
        "n_ctx",
        type=click.IntRange(min=64),
        default=None,
        help="Context size in tokens (default 2048, at most the model's).",
    ),
    click.option(
        "--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: the cores free now)."
    ),
    click.option(
        "--gpu-layers",
        type=int,
        default=None,
        help="Layers offloaded to the GPU (default: all when llama.cpp has a GPU backend, else none).",
    ),
)
_SLOT_OPTIONS = (
    click.option(
        "--slots",
        type=click.IntRange(min=1, max=64),
        default=None,
        help="Requests kept in flight at once (default: from the model's cache size and the memory free, at most "
        "8; 1 is the strict one-at-a-time path).",
    ),
    click.option("--sequential", is_flag=True, help="One request at a time (the same as --slots 1)."),
    click.option(
        "--exact",
        is_flag=True,
        help="Batched records equal the --sequential ones to the bit (micro-batches of 32, bf16 cache values, "
        "flash attention on: about 26% slower on a CPU). Default: fast, the same records from run to run.",
    ),
)


def say(message: str) -> None:
    """A progress or notice line on stderr (stdout stays for results)."""
    click.echo(message, err=True)


def sampling_options(func):
    """--temperature, --top-p, --seed: passed on as `sampling`."""

    @click.option(
        "--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 is greedy decoding."
    )
    @click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (recorded with results).")
    @functools.wraps(func)
    def wrapper(*args, temperature, top_p, seed, **kwargs):
        return func(*args, sampling=Sampling(temperature=temperature, top_p=top_p, seed=seed), **kwargs)

    return wrapper


def open_engine(model: str | None, n_ctx=None, threads=None, gpu_layers=None, slots=None, exact=False) -> Engine:
    """Load a model by store name or path; with no name, the store's only model.

    Threads default to the cores free now; a line on stderr says when the machine's load changed that or
    questions a --threads given (engine/threads.py)."""
    choice = cpu.choose_threads(threads)
    if choice.note:
        click.echo(f"mental-edge: {choice.note}", err=True)
    threads = choice.threads
    if model is None:
        entry = store.default_model()
        path = store.model_path(entry)
    else:
        path = store.resolve_model(model)
        entry = store.find_model(model) if not _is_path(model) else None
    name = entry.name if entry else None
    engine = load_engine(path, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, slots=slots, exact=exact, name=name)
    if entry is not None and entry.sha256:
        engine.info.sha256 = entry.sha256  # the store hashed the file once; no need to read gigabytes again
    if entry is not None and entry.verification:  # `pull --verify`'s verdict, carried into every record's `run`
        engine.settings["verified"] = entry.verified_text()
    return engine


def _is_path(model: str) -> bool:
    from pathlib import Path

    return Path(model).expanduser().exists()
