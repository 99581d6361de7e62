"""Conversion commands: convert (a checkpoint folder or hub id to GGUF) and quantize (GGUF to GGUF)."""

from pathlib import Path

import click

from mental_edge.cli import main
from mental_edge.cli.options import say
from mental_edge.errors import MentalEdgeError


def _progress(done: int, total: int, name: str) -> None:
    click.echo(f"[{done}/{total}] {name}", err=True)


def _checkpoint(src: str, revision: str | None, need_tokenizer: bool) -> tuple[Path, str | None, str | None]:
    """(folder, hub repo id, revision): a local folder as is, anything else downloaded from the hub."""
    if Path(src).is_dir():
        return Path(src), None, revision
    if Path(src).exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise MentalEdgeError(f"{src}: no such checkpoint folder (and not a hub id such as klyang/MentaLLaMA-chat-7B)")
    from mental_edge.store import hub, pull

    folder = pull.download_checkpoint(src, revision, need_tokenizer=need_tokenizer)
    repo, sha = hub.checkpoint_source(folder) or (src, revision)
    return folder, repo, sha


@main.command()
@click.argument("src")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The GGUF file to write (for BART: the CTranslate2 folder to create).",
)
@click.option(
    "--outtype",
    type=click.Choice(["f32", "f16", "bf16", "q8_0", "int8"]),
    default=None,
    help="Type of the converted weights (1-D tensors stay f32); default f16, for BART int8.",
)
@click.option("--quant", help="Then quantize with llama.cpp to this type (Q4_K_M, Q8_0, ...).")
@click.option("--revision", help="Hub branch, tag or commit (with a hub id).")
@click.option(
    "--tokenizer-from",
    metavar="FOLDER|REPO",
    help="Take the tokenizer files from this folder or hub repo (the base model's), for a checkpoint that lacks them.",
)
def convert(src, output, outtype, quant, revision, tokenizer_from):
    """Convert a Hugging Face checkpoint (local folder or hub id) to GGUF."""
    from mental_edge.convert import ConversionError, convert_checkpoint

    tokenizer = None
    if tokenizer_from is not None:  # before a checkpoint is downloaded
        from mental_edge.store.pull import tokenizer_folder

        tokenizer = tokenizer_folder(tokenizer_from, say=say)
    folder, repo, revision = _checkpoint(src, revision, need_tokenizer=tokenizer is None)
    try:
        path = convert_checkpoint(
            folder,
            output,
            outtype=outtype,
            quant=quant,
            source=repo,
            revision=revision,
            progress=_progress,
            on_quantized=_report_fallbacks,
            tokenizer_from=tokenizer,
            say=say,
        )
    except ConversionError as exc:
        raise MentalEdgeError(str(exc)) from None
    click.echo(str(path))


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The GGUF file to write.")
@click.option("--type", "type_name", required=True, help="llama.cpp file type: Q4_K_M, Q5_K_M, Q8_0, IQ4_XS, ...")
def quantize(src, output, type_name):
    """Quantize a GGUF file (f32/f16/bf16) with llama.cpp."""
    from mental_edge.convert import ConversionError
    from mental_edge.convert.quantize import quantize as run_quantize

    try:
        result = run_quantize(src, output, type_name, progress=_progress)
    except ConversionError as exc:
        raise MentalEdgeError(str(exc)) from None
    _report_fallbacks(result)
    click.echo(str(result.path))


def _report_fallbacks(result) -> None:
    """Say which tensors llama.cpp gave another type (rows that are not whole blocks of the asked one)."""
    if report := result.fallback_report():
        click.echo(report, err=True)
