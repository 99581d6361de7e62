"""Conversion commands: convert (a checkpoint folder or hub id to GGUF) and quantize (GGUF to GGUF)."""

from pathlib import Path

import click

from mental_edge.cli import main
from mental_edge.errors import MentalEdgeError


def _progress(done: int, total: int, name: str) -> None:
    click.echo(f"[{done}/{total}] {name}", err=True)


def _checkpoint(src: str, revision: str | None) -> tuple[Path, str | None, str | None]:
    """(folder, hub repo id, revision): a local folder as is, anything else downloaded from the hub."""
    if Path(src).is_dir():
        return Path(src), None, revision
    from mental_edge import hub

    folder = hub.download_checkpoint(src, revision)
    repo, sha = hub.checkpoint_source(folder) or (src, revision)
    return folder, repo, sha


@main.command()
@click.argument("src")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The GGUF file to write.")
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), default="f16", show_default=True,
              help="Type of the converted weights (1-D tensors stay f32).")
@click.option("--quant", help="Then quantize with llama.cpp to this type (Q4_K_M, Q8_0, ...).")
@click.option("--revision", help="Hub branch, tag or commit (with a hub id).")
def convert(src, output, outtype, quant, revision):
    """Convert a Hugging Face checkpoint (local folder or hub id) to GGUF."""
    from mental_edge.convert import ConversionError, convert_checkpoint

    folder, repo, revision = _checkpoint(src, revision)
    try:
        path = convert_checkpoint(folder, output, outtype=outtype, quant=quant, source=repo, revision=revision,
                                  progress=_progress)
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
    if result.fallbacks:
        pairs = sorted({f"{want}->{used}" for want, used in result.fallbacks.values()})
        click.echo(f"{len(result.fallbacks)} tensor(s) have rows that do not fit {', '.join(pairs)}: "
                   "they use the fallback type", err=True)
    click.echo(str(result.path))
