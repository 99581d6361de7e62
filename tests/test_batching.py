"""The batched engine (several requests in flight in one llama.cpp context) against the strict one-at-a-time path,
on real IMHI posts with several tasks each, greedy, in exact mode (`--exact`; tests/test_exact_modes.py has each
mode's guarantee): the records are equal to the bit; and a resumed sequential run
against an uninterrupted one.

What it takes (engine/llama_batch.py and engine/llama.py say more): llama.cpp's CPU flash attention adds up a
sequence's cache cells in cell order, so the batcher never lets a sequence's new tokens land below its older ones
(no cell is freed within a run; the cache starts again empty when full); and a token decoded alone is read on a
path that splits the cells between threads when the values are f16, so the engine keeps bf16 values. The last
tests here show each fact on its own. Without --exact the batcher frees cells at once instead (a compact cache,
never started again): a test here shows that too.
"""

import numpy as np
import pytest
from test_analysis import _imhi_posts

from mental_edge.analysis import Analyzer
from mental_edge.analysis.runner import run_analysis
from mental_edge.engine import load_engine
from mental_edge.io.readers import InputRow
from mental_edge.prompting import load_tasks

TASKS = ("DR", "dreaddit", "loneliness", "SAD", "CAMS")
MAX_TOKENS = 16
N_CTX = 384  # a small cache (4 slots: 1,536 cells), so that the batched run has to start it again


@pytest.fixture(scope="module")
def posts(imhi_dir):
    long = [p for p in _imhi_posts(imhi_dir, "DR", 4) if len(p) > 500]  # one is cut to fit the context
    return long + _imhi_posts(imhi_dir, "SAD", 1)


def _analyse(model, posts, slots, exact=True):
    engine = load_engine(model, n_ctx=N_CTX, threads=2, slots=slots, exact=exact)
    try:
        ts = load_tasks()
        analyzer = Analyzer(engine, max_tokens=MAX_TOKENS)
        tasks = [ts.task(name) for name in TASKS]
        records = [
            r for _, results in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts)) for r in results
        ]
        return records, getattr(engine, "batcher", None)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def both(smollm2_gguf, posts):
    (one, _), (batched, batcher) = _analyse(smollm2_gguf, posts, 1), _analyse(smollm2_gguf, posts, 4)
    return one, batched, batcher


def test_batched_records_equal_the_one_at_a_time_records(both):
    one, batched, batcher = both
    assert len(one) == len(batched) == 4 * len(TASKS)
    assert sum(bool(r.explanation) for r in one) >= len(one) // 2  # SmolLM2 sometimes ends at once: most do not
    assert batcher.peak_busy > 1 and batcher.restarts >= 1  # it did batch, and did start the cache again
    for a, b in zip(one, batched):
        assert (b.task, b.label, b.explanation) == (a.task, a.label, a.explanation)
        assert b.probabilities == a.probabilities  # to the bit


def test_the_default_compact_cache_frees_cells_and_never_starts_again(smollm2_gguf, posts, both):
    """Without --exact a cell no request needs is freed at once (engine/llama_batch.py), so the cache that the
    exact run above had to start again holds this run throughout; labels are those of the exact sequential run.
    Probabilities move: the fast default's own kernels (f16 values, micro-batches of 512) put even its sequential
    run up to 0.060 from the exact one on these rows, and this run 0.046 from that (2026-12-02); 0.1 bounds both.
    tests/test_exact_modes.py has the fast mode's guarantee: the same records run to run."""
    one, _, _ = both
    fast, batcher = _analyse(smollm2_gguf, posts, 4, exact=False)
    assert batcher.peak_busy > 1 and batcher.restarts == 0
    assert [(r.task, r.label) for r in fast] == [(r.task, r.label) for r in one]
    for a, b in zip(one, fast):
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 0.1


def test_the_tasks_of_one_post_run_side_by_side_on_one_copy_of_its_cells(smollm2_gguf, imhi_dir):
    """Eight tasks of a 200-token post in a cache of 2,048 cells (8 slots of 256). Counted slot by slot, the
    post's cells would leave room for six requests at once; held once and shared (engine/llamacpp/cell_map.py),
    they leave room for all eight. llama.cpp refuses a batch it has no cells for, so an under-count would fail
    the run; records equal the one-at-a-time run's (exact mode)."""
    eight = ("DR", "dreaddit", "loneliness", "swmh", "Irf-belongingness", "Irf-burdensomeness", "SAD", "CAMS")
    tasks = [load_tasks().task(name) for name in eight]

    def run(slots):
        engine = load_engine(smollm2_gguf, n_ctx=256, threads=2, slots=slots, exact=True)
        try:
            post = max((p for p in _imhi_posts(imhi_dir, "DR", 30) if len(engine.tokenize(p)) <= 205), key=len)
            ((_, results),) = Analyzer(engine, max_tokens=8).analyze_stream([(0, post, tasks)])
            return results, engine.n_cells, getattr(engine, "batcher", None)
        finally:
            engine.close()

    (one, _, _), (batched, cells, batcher) = run(1), run(8)
    assert cells == 2048 and not any(r.flags for r in batched)
    assert batcher.peak_busy == 8
    assert batched == one


def test_a_resumed_sequential_run_gives_the_records_of_an_uninterrupted_one(smollm2_gguf, posts):
    rows = [InputRow(id=f"r{i}", text=p, source="test", row_number=i) for i, p in enumerate([posts[0], posts[-1]])]
    tasks = [load_tasks().task(name) for name in ("DR", "loneliness")]
    engine = load_engine(smollm2_gguf, n_ctx=1024, threads=2, slots=1)
    try:
        analyzer = Analyzer(engine, max_tokens=MAX_TOKENS)
        whole: list[dict] = []
        run_analysis(analyzer, rows, tasks, write=whole.append)
        first: list[dict] = []
        run_analysis(analyzer, rows, tasks, write=first.append, limit=1)
        first = first[:1]  # as if killed after writing the first record
        done = {(r["id"], r["task"]) for r in first}
        rest: list[dict] = []
        summary = run_analysis(analyzer, rows, tasks, write=rest.append, done=done)
    finally:
        engine.close()
    assert summary.skipped == 1
    resumed = sorted(first + rest, key=lambda r: (r["id"], r["task"]))
    assert resumed == sorted(whole, key=lambda r: (r["id"], r["task"]))


def test_other_sequences_cells_before_a_sequence_leave_its_logits_unchanged(smollm2_gguf):
    """Where a sequence's cells sit changes nothing, as long as they are in position order."""
    engine = load_engine(smollm2_gguf, n_ctx=512, threads=2, slots=4, exact=True)
    try:
        prompt = engine.tokenize("I have not slept properly in weeks and nothing feels worth doing. " * 3, add_bos=True)
        more = engine.tokenize(" My friends say I should talk to someone, but I do not know who.")

        def continuation_logits(other_first: bool):
            engine.clear_cache()
            if other_first:
                _read(engine, prompt[:40], seq=5)  # another sequence takes the first cells
            _read(engine, prompt, seq=0)
            engine.decode_rows([(tok, len(prompt) + j, 0, True) for j, tok in enumerate(more)])
            return np.stack([engine.log_probs(i) for i in range(len(more))])

        assert np.array_equal(continuation_logits(False), continuation_logits(True))
    finally:
        engine.close()


def test_a_token_decoded_alone_does_not_depend_on_the_other_cells_in_the_cache(smollm2_gguf):
    """With f16 values this fails by up to 0.56 of a logit once 512 cells are in use (see CPU_VALUE_TYPE)."""
    engine = load_engine(smollm2_gguf, n_ctx=1024, threads=2, slots=4, exact=True)
    try:
        prompt = engine.tokenize("Nothing I do seems to matter and I am tired all the time. " * 4, add_bos=True)
        other = engine.tokenize("I started running again and it helps with my sleep a lot. " * 40)[:600]
        token = engine.tokenize(" I")[0]

        def next_logits(others: bool):
            engine.clear_cache()
            _read(engine, prompt, seq=0)
            if others:
                _read(engine, other, seq=3)  # another post's cells after it: 600 more in use
            engine.decode_rows([(token, len(prompt), 0, True)])
            return engine.log_probs(0)

        assert np.array_equal(next_logits(False), next_logits(True))
    finally:
        engine.close()


def _read(engine, tokens, seq):
    """Feed tokens to one sequence from position 0 through the batch interface, n_batch at a time."""
    for start in range(0, len(tokens), engine.n_batch):
        chunk = tokens[start : start + engine.n_batch]
        engine.decode_rows([(tok, start + j, seq, False) for j, tok in enumerate(chunk)])
