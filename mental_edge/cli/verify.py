"""`mental-edge verify`: a model file against its Hugging Face checkpoint, or against another model file."""

import sys

import click

from mental_edge.api.checks import verify as run_verify
from mental_edge.cli import main
from mental_edge.cli.options import say
from mental_edge.verification import DEFAULT_ROWS


@main.command()
@click.argument("model")
@click.option(
    "--reference",
    type=click.Path(exists=True, file_okay=False),
    help="The Hugging Face checkpoint folder MODEL was converted from (needs the verify extra: torch, transformers).",
)
@click.option("--against", "other", help="Another model file (store name or path): the quantization report.")
@click.option(
    "--data",
    type=click.Path(exists=True),
    default=None,
    help="IMHI data: the folder holding test_instruction/ (or test_complete/ for T5 and BART), or one CSV file "
    "(default: the rows shipped with the package, four a task).",
)
@click.option("--rows", type=click.IntRange(min=1), default=DEFAULT_ROWS, show_default=True, help="Rows per task.")
@click.option("--tasks", "task_names", multiple=True, help="Tasks to use (repeat; default: every task in --data).")
@click.option("--device", help="Where transformers runs: cpu or cuda (default: cuda when there is one).")
@click.option("--dtype", type=click.Choice(["float32", "bf16"]), default="float32", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the model file.")
@click.option("--gpu-layers", type=int, default=None, help="Layers of the model file on the GPU.")
def verify(model, reference, other, data, rows, task_names, device, dtype, threads, gpu_layers):
    """Check MODEL against its checkpoint (--reference) or another model file (--against), on a few IMHI rows per
    task: next-token top-1 agreement, mean KL divergence, worst top-5 logit difference, label agreement and the
    largest label-probability difference, then a verdict. Exits 1 when the verdict is FAIL."""
    tasks = [t for name in task_names for t in name.split(",") if t] or None
    result = run_verify(
        model,
        reference=reference,
        against=other,
        data=data,
        rows=rows,
        tasks=tasks,
        device=device,
        dtype=dtype,
        threads=threads,
        gpu_layers=gpu_layers,
        say=say,
    )
    for line in result.lines():
        click.echo(line)
    if not result.passed:
        sys.exit(1)
