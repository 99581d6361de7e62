"""`mental-edge score`: explanations of an existing records file scored against the data it came from."""

import sys

import click

from mental_edge.api.evaluate import score_explanations
from mental_edge.cli import main
from mental_edge.cli.options import prompts_option, say
from mental_edge.io.lock import hold_output
from mental_edge.prompting import load_tasks
from mental_edge.report.stats import RESAMPLES, SEED
from mental_edge.scoring.classify import Classifiers
from mental_edge.store.pull import scorer_folder


def scorer_options(func):
    """--scorer, --scorer-weights, --scorer-compute and --classifiers (score, eval)."""
    func = click.option(
        "--scorer-compute",
        type=click.Choice(["default", "int8"]),
        default="default",
        show_default=True,
        help="The scorer's arithmetic: its weights' type (float32 from pull/conversion: the benchmark's scores), or "
        "int8 (about 3x faster on a CPU, scores approximate).",
    )(func)
    func = click.option(
        "--classifiers",
        "classifiers_dir",
        type=click.Path(file_okay=False, exists=True),
        default=None,
        help="Folder of the published MentalBERT classifiers, one per dataset (DR/, SAD/, ...): they label free "
        "answers (eval --free) and judge whether each explanation argues for its label (with --scorer).",
    )(func)
    func = click.option(
        "--scorer-weights",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="A torch state dict applied on top of a checkpoint --scorer before conversion (BARTScore's ParaBank "
        "bart_score.pth), read without running its pickle.",
    )(func)
    return click.option(
        "--scorer",
        metavar="NAME|FOLDER",
        default=None,
        help="The BART scorer: a store name (pull bart-large-cnn), a converted scorer folder, or a Hugging Face BART "
        "checkpoint folder (converted once and cached).",
    )(func)


def pairs_progress():
    """A callback drawing the pairs scored so far on stderr (a terminal only), with rate and ETA."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="pair", file=sys.stderr, disable=None, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def scorer_settings(scorer, scorer_weights, scorer_compute, classifiers_dir, prompts_dir, model_opts) -> dict:
    """eval's keywords for `evaluate` from the scorer options, the scorer found (and converted) before the model
    loads."""
    if not scorer and not classifiers_dir:
        return {}
    folder = scorer_folder(scorer, scorer_weights, say=say) if scorer else None
    threads = model_opts.get("threads")
    classifiers = Classifiers(classifiers_dir, load_tasks(prompts_dir), threads=threads, say=say) \
        if classifiers_dir else None  # fmt: skip
    return {"scorer": folder, "classifiers": classifiers, "scorer_compute": scorer_compute}


@main.command("score")
@click.argument("records", type=click.Path(dir_okay=False, exists=True))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="The IMHI file (or folder of them) the records were made from.")  # fmt: skip
@scorer_options
@click.option("--output", "-o", "stem", required=True, help="Write STEM.json, STEM.md and STEM.html.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads of the scorer.")
@prompts_option
@click.option("--resamples", type=click.IntRange(min=100), default=RESAMPLES, show_default=True)
@click.option("--seed", type=int, default=SEED, show_default=True, help="Seed of the bootstrap resampling.")
def score_command(
    records,
    data_path,
    scorer,
    scorer_weights,
    scorer_compute,
    classifiers_dir,
    stem,
    threads,
    prompts_dir,
    resamples,
    seed,
):
    """Score the explanations in RECORDS against --data's references: BARTScore, ROUGE-1/2/L and BLEU per task,
    each with a 95% bootstrap interval, against the gold answers' reasoning (and the expert set where found)."""
    if scorer is None:
        raise click.UsageError("give the BART scorer with --scorer NAME|FOLDER")
    with hold_output(stem):
        report = score_explanations(
            records,
            data_path,
            scorer,
            scorer_weights=scorer_weights,
            compute=scorer_compute,
            classifiers=classifiers_dir,
            prompts=prompts_dir,
            threads=threads,
            resamples=resamples,
            seed=seed,
            on_progress=pairs_progress(),
            say=say,
        )
        paths = report.save(stem, say=say)
    click.echo(report.table(), nl=False)
    say(f"written: {', '.join(map(str, paths))}")
