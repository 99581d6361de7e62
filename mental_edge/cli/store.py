"""Store commands: pull, import, models (ls, rm)."""

import click

from mental_edge import store
from mental_edge.cli import main
from mental_edge.cli.options import say
from mental_edge.errors import MentalEdgeError
from mental_edge.store.pull import pull as pull_model

_COLUMNS = ("NAME", "ARCHITECTURE", "QUANT", "SIZE", "SHA256", "SOURCE", "REVISION", "VERIFIED")


@main.command()
@click.argument("name_or_repo")
@click.option("--quant", help="llama.cpp type to quantize to, or to pick from a GGUF repo (Q4_K_M, Q8_0, ...).")
@click.option("--revision", help="Branch, tag or commit on the hub (default: main).")
@click.option(
    "--outtype", type=click.Choice(["f32", "f16", "bf16", "q8_0", "int8"]), help="Converted type before --quant."
)
@click.option("--keep-download", is_flag=True, help="Keep the downloaded checkpoint after conversion.")
@click.option(
    "--tokenizer-from",
    metavar="FOLDER|REPO",
    help="Take the tokenizer files from this folder or hub repo (the base model's), for a repo that lacks them.",
)
@click.option(
    "--verify",
    "verify_data",
    type=click.Path(exists=True),
    help="Check the conversion against the checkpoint (transformers) and the quantization against the f16 file, "
    "on these IMHI rows (the folder holding test_instruction/); the result is kept in the store (`models`).",
)
def pull(name_or_repo, quant, revision, outtype, keep_download, verify_data, tokenizer_from):
    """Download a model (short name or hub id), convert it if needed, and add it to the store."""
    check = None
    if verify_data is not None:
        from mental_edge import verification
        from mental_edge.verification import reference

        reference.check_extra()  # before gigabytes are downloaded
        check = verification.pull_check(verify_data, say=say)
    entry = pull_model(
        name_or_repo,
        quant=quant,
        revision=revision,
        outtype=outtype,
        progress=say,
        keep_download=keep_download,
        check=check,
        tokenizer_from=tokenizer_from,
    )
    click.echo(_summary(entry))


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--name", help="Store name (default: the file name).")
def import_cmd(file, name):
    """Add a GGUF file (or a CTranslate2 folder) to the store, e.g. one carried to an offline machine."""
    entry = store.import_model(file, name=name)
    click.echo(_summary(entry))


@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx):
    """List the models in the store (or 'models rm NAME')."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(ls)


def _unchanged(entry):
    """The entry re-hashed when its file's size or mtime moved; a changed file said on stderr, still listed."""
    try:
        return store.check_unchanged(entry)
    except MentalEdgeError as exc:
        click.echo(f"mental-edge: {exc}", err=True)
        return entry


@models.command()
def ls():
    """List the models in the store."""
    entries = [_unchanged(e) for e in store.list_models()]
    if not entries:
        click.echo(f"The store ({store.store_home()}) is empty: {store.HOW_TO_GET}.")
        return
    rows = [_COLUMNS] + [
        (
            e.name,
            e.architecture,
            e.quant,
            store.size_text(e.size),
            e.sha256[:12],
            e.source,
            e.revision[:12] or "-",
            e.verified_text(),
        )
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@models.command()
@click.argument("name")
def rm(name):
    """Remove a model from the store (deletes its file)."""
    entry = store.remove_model(name)
    click.echo(f"removed {entry.name}")


def _summary(entry: store.ModelEntry) -> str:
    return (
        f"{entry.name}: {entry.architecture} {entry.quant}, {store.size_text(entry.size)}, sha256 {entry.sha256[:12]}"
    )
