"""Options several commands share: the model options of every command that loads a model, sampling, and the
analysis settings of `analyze` and `eval`."""

from __future__ import annotations

import functools
import sys

import click

from mental_edge.analysis import DEFAULT_MAX_TOKENS
from mental_edge.engine import Sampling
from mental_edge.prompting.query_format import FORMATS


def model_options(func=None, *, slots: bool = True):
    """The one set of model options, for every command that loads a model: -m/--model, --ctx, --threads,
    --gpu-layers and, where requests run side by side (`slots=True`), --slots and --sequential. The command
    gets them as `model_opts`, the keywords of `mental_edge.load`. Use as `@model_options` or
    `@model_options(slots=False)`."""
    if func is None:
        return functools.partial(model_options, slots=slots)
    takes_slots = slots  # the wrapper's own `slots` is the option's value
    options = [*_MODEL_OPTIONS, *(_SLOT_OPTIONS if takes_slots else ())]

    @functools.wraps(func)
    def wrapper(
        *args, model, n_ctx, threads, gpu_layers, allow_architectures, slots=None, sequential=False, exact=False, **kw
    ):
        opts = {"model": model, "ctx": n_ctx, "threads": threads, "gpu_layers": gpu_layers}
        opts["allow_architectures"] = allow_architectures
        if takes_slots:
            opts |= {"slots": slots, "sequential": sequential, "exact": exact}
        return func(*args, model_opts=opts, **kw)

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
    click.option(
        "--allow-architecture",
        "allow_architectures",
        multiple=True,
        callback=lambda ctx, param, value: _allowed_architectures(value),
        metavar="ARCH",
        help="Also run model files of this GGUF architecture beyond llama, chatglm and t5 (repeatable; setting: "
        "MENTAL_EDGE_ALLOW_ARCHITECTURES). The file check still applies; recorded in every record.",
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


def _allowed_architectures(named: tuple[str, ...]) -> tuple[str, ...]:
    """The --allow-architecture names plus the setting's (MENTAL_EDGE_ALLOW_ARCHITECTURES, commas or spaces)."""
    import os

    setting = os.environ.get("MENTAL_EDGE_ALLOW_ARCHITECTURES", "")
    return tuple(sorted({a for v in (*named, setting) for a in v.replace(",", " ").split()}))


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


prompts_option = click.option(
    "--prompts",
    "prompts_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of task files and templates adding to or overriding the package's.",
)


def analysis_options(func):
    """--max-tokens, --free, --prompts, --format (analyze and eval): passed on as `analysis`, the keywords of
    `Model.iter_rows`, and `prompts_dir`."""

    @click.option(
        "--max-tokens",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_TOKENS,
        show_default=True,
        help="Most tokens of explanation (or of a free answer).",
    )
    @click.option("--free", is_flag=True, help="Let the model answer freely (the published way) and parse its label.")
    @prompts_option
    @click.option(
        "--format",
        "prompt_format",
        type=click.Choice(list(FORMATS)),
        default=None,
        help="How the query is wrapped (default: the model family's).",
    )
    @functools.wraps(func)
    def wrapper(*args, max_tokens, free, prompts_dir, prompt_format, **kwargs):
        analysis = {"max_tokens": max_tokens, "free": free, "prompt_format": prompt_format}
        return func(*args, analysis=analysis, prompts_dir=prompts_dir, **kwargs)

    return wrapper


def progress_bar(total: int | None):
    """A progress bar with rate and ETA on stderr (only on a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="post", file=sys.stderr, disable=None, dynamic_ncols=True)
