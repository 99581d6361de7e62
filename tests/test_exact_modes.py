"""Which guarantee holds in which mode, on IMHI rows (engine/llamacpp/decoder.py DEFAULT_EXACT, docs/performance.md):
- `--exact`: batched records equal the one-at-a-time records to the bit (micro-batches of 32, bf16 cache values,
  flash attention on, paired output rows);
- the default (fast): the same input and settings give the same records from run to run, batched and sequential;
and the mode is in every record's `run`, through the CLI."""

import json

import pytest
from click.testing import CliRunner
from test_analysis import _imhi_posts

from mental_edge.analysis import Analyzer
from mental_edge.cli import main
from mental_edge.engine import load_engine
from mental_edge.prompting import load_tasks

TASKS = ("DR", "SAD", "CAMS")
MAX_TOKENS = 12
N_CTX = 512


@pytest.fixture(scope="module")
def posts(imhi_dir):
    return _imhi_posts(imhi_dir, "DR", 3) + _imhi_posts(imhi_dir, "SAD", 1)


def _records(model, posts, slots: int, exact: bool):
    engine = load_engine(model, n_ctx=N_CTX, threads=2, slots=slots, exact=exact)
    try:
        tasks = [load_tasks().task(name) for name in TASKS]
        analyzer = Analyzer(engine, max_tokens=MAX_TOKENS)
        records = [
            r for _, results in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)) for r in results
        ]
        return records, dict(engine.settings), getattr(engine, "batcher", None)
    finally:
        engine.close()


def test_exact_mode_batched_records_equal_the_sequential_ones_to_the_bit(smollm2_gguf, posts):
    one, settings, _ = _records(smollm2_gguf, posts, 1, exact=True)
    batched, batched_settings, batcher = _records(smollm2_gguf, posts, 4, exact=True)
    assert settings["exact"] is batched_settings["exact"] is True
    assert batched_settings["ubatch"] == 32 and "values bf16" in batched_settings["cache_types"]
    assert batched_settings["flash_attn"] == "on"
    assert batcher.peak_busy > 1  # it did batch
    assert len(one) == len(batched) == len(posts) * len(TASKS)
    for a, b in zip(one, batched):
        assert (b.task, b.label, b.explanation) == (a.task, a.label, a.explanation)
        assert b.probabilities == a.probabilities  # to the bit


@pytest.mark.parametrize("slots", [4, 1], ids=["batched", "sequential"])
def test_fast_mode_gives_the_same_records_run_to_run(smollm2_gguf, posts, slots):
    first, settings, _ = _records(smollm2_gguf, posts, slots, exact=False)
    again, _, _ = _records(smollm2_gguf, posts, slots, exact=False)
    assert settings["exact"] is False and settings["ubatch"] == settings["n_batch"]
    assert "values f16" in settings["cache_types"]
    assert len(first) == len(posts) * len(TASKS)
    assert sum(bool(r.explanation) for r in first) >= len(first) // 2
    for a, b in zip(first, again):
        assert (b.task, b.label, b.explanation, b.probabilities) == (a.task, a.label, a.explanation, a.probabilities)


def test_the_mode_is_in_every_records_run_through_the_cli(smollm2_gguf, tmp_path):
    runs = {}
    for flag in ([], ["--exact"]):
        out = tmp_path / f"out{len(flag)}.jsonl"
        args = ["analyze", "-m", smollm2_gguf, "--task", "DR", "--no-explain", "--threads", "2", "-o", out]
        result = CliRunner().invoke(main, [*map(str, args), *flag, "I cannot sleep and nothing feels worth it."])
        assert result.exit_code == 0, result.output
        (record,) = [json.loads(line) for line in out.read_text().splitlines()]
        runs[bool(flag)] = record["run"]
    assert runs[False]["exact"] is False and runs[True]["exact"] is True
    assert runs[True]["ubatch"] == 32 and runs[False]["ubatch"] == runs[False]["n_batch"]
    assert runs[False]["slots"] >= 1 and runs[False]["cache_cells"] >= runs[False]["n_ctx"]
    assert runs[False]["cache_sizing"]
