"""The batched engine (several requests in flight in one llama.cpp context) against the strict one-at-a-time path,
on real IMHI posts with several tasks each, greedy; and a resumed sequential run against an uninterrupted one.

Why batched is not always equal to the bit: llama.cpp's CPU flash attention adds up a sequence's cache cells in
cell order, and in the unified cache a running sequence's new tokens can land in cells freed below its older ones
(find_slot starts again from cell 0 when enough cells before its head are free). Its cells then sit out of position
order and the sums round differently. Other sequences' cells before it change nothing (checked below, to the bit);
a hole below it does (up to 0.9 in a logit on SmolLM2). The one-at-a-time path only ever frees cells at the end of
its one sequence, so its cells stay in order. How far batched results move depends on where the scheduler leaves
holes. Measured on the rows below (2 threads, SmolLM2 Q4_1): labels 12 of 12 equal every time; probabilities at
most 9.7e-4 apart with one version of the scheduler and 1.0e-2 with the next (waiting for a shared post prefix);
explanations 9 of 12 identical; on six posts with 24-token explanations 24 of 24 labels, probabilities within
0.04, 18 of 24 explanations.
"""

import numpy as np
import pytest

from mental_edge.analysis import Analyzer
from mental_edge.engine import load_engine
from mental_edge.io.readers import InputRow
from mental_edge.runner import run_analysis
from mental_edge.tasks import load_tasks

from test_analysis import _imhi_posts

TASKS = ("DR", "dreaddit", "loneliness", "SAD")
MAX_TOKENS = 16
PROB_TOLERANCE = 0.05  # measured up to 0.04 (see above)
EXPLANATIONS_SAME = 0.5  # share of identical explanations; measured 0.75 on these rows


@pytest.fixture(scope="module")
def posts(imhi_dir):
    return _imhi_posts(imhi_dir, "DR", 2) + _imhi_posts(imhi_dir, "SAD", 1)


def _analyse(model, posts, slots):
    engine = load_engine(model, n_ctx=1024, threads=2, slots=slots)
    try:
        ts = load_tasks()
        analyzer = Analyzer(engine, max_tokens=MAX_TOKENS)
        tasks = [ts.task(name) for name in TASKS]
        return [r for _, results in analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts))
                for r in results]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def both(smollm2_gguf, posts):
    return _analyse(smollm2_gguf, posts, 1), _analyse(smollm2_gguf, posts, 4)


def test_batched_labels_equal_the_one_at_a_time_labels(both):
    one, batched = both
    assert len(one) == len(batched) == 3 * len(TASKS)
    assert [(r.task, r.label) for r in batched] == [(r.task, r.label) for r in one]


def test_batched_probabilities_are_within_the_measured_tolerance(both):
    one, batched = both
    worst = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in zip(one, batched) for k in a.probabilities)
    print(f"largest probability difference: {worst:.2e}")
    assert worst <= PROB_TOLERANCE


def test_batched_explanations_agree_with_the_one_at_a_time_ones(both):
    one, batched = both
    same = sum(a.explanation == b.explanation for a, b in zip(one, batched))
    assert sum(bool(r.explanation) for r in one) >= len(one) // 2  # SmolLM2 sometimes ends at once: most do not
    print(f"explanations identical: {same} of {len(one)}")
    assert same >= EXPLANATIONS_SAME * len(one)


def test_a_resumed_sequential_run_gives_the_records_of_an_uninterrupted_one(smollm2_gguf, posts):
    rows = [InputRow(id=f"r{i}", text=p, source="test", row_number=i) for i, p in enumerate(posts[:2])]
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
    """What makes batching exact as long as no freed cell is reused below a running sequence."""
    engine = load_engine(smollm2_gguf, n_ctx=512, threads=2, slots=4)
    try:
        prompt = engine.tokenize("I have not slept properly in weeks and nothing feels worth doing. " * 3, add_bos=True)
        more = engine.tokenize(" My friends say I should talk to someone, but I do not know who.")

        def continuation_logits(other_first: bool):
            engine._forget()
            if other_first:
                engine._decode(prompt[:40], 0, seq=5)  # another sequence takes the first cells
            engine._decode(prompt, 0, seq=0)
            engine._fill_batch([(0, len(prompt), more)], logits="all")
            engine._run_batch()
            return np.stack([engine._logits(i) for i in range(len(more))])

        assert np.array_equal(continuation_logits(False), continuation_logits(True))
    finally:
        engine.close()
