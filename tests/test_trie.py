"""Candidate answers as a token trie (engine/trie.py): the layout on its own, then on the real SmolLM2 model and
IMHI rows of every English task (CAMS, SAD and swmh with two posts each; tasks without an IMHI test file of their
own here, such as swmh, on DR's posts), one at a time and batched; and explanations that go on from their answer's
scored cells against ones that read the answer sentence again.

Tolerance: none with the exact settings. A llama.cpp row's logits depend on its token, its position and the cells
it attends to (summed in cell order); with the exact settings (micro-batches of 32, paired output rows, bf16
values, flash attention on) not on which rows share its micro-batch, and the trie changes nothing else: a shared
token is the same row every answer would read, at the same position, over the same cells. Measured: equal to the
bit on every row here (`python benchmarks/candidate_trie.py --exact`: 64 posts x tasks, difference 0).
"""

import numpy as np
import pytest
from test_analysis import _imhi_posts

from mental_edge.analysis import Analyzer
from mental_edge.engine import load_engine
from mental_edge.engine.trie import build_trie, path_scores, trie_size
from mental_edge.prompting import load_tasks

FAMILY_FILES = ("CAMS", "DR", "Irf", "MultiWD", "SAD", "dreaddit", "loneliness", "t-sid")
TWO_POSTS = ("CAMS", "SAD", "swmh")


def test_shared_tokens_are_one_node_each_parents_first():
    answers = [[1, 2, 3, 4], [1, 2, 5, 6], [1, 7], [8], [1, 2, 3, 9]]
    trie = build_trie(answers)
    # an answer's last token is never decoded: only the logits before it are needed
    assert trie.tokens == (1, 2, 3, 5) and trie.depths == (0, 1, 2, 2)
    assert trie.paths == ((0, 1, 2), (0, 1, 3), (0,), (), (0, 1, 2))
    assert trie.members == ((0, 1, 2, 4), (0, 1, 4), (0, 4), (1,))
    for path in trie.paths:  # a node's parent comes before it
        assert list(path) == sorted(path)
    assert trie_size(answers) == 4 < len(build_trie(answers, share=False)) == 3 + 3 + 1 + 0 + 3
    # a token equal to another answer's at another depth or under another parent is not shared
    assert len(build_trie([[1, 2, 3], [2, 2, 3], [1, 3, 3]])) == 5


def test_path_scores_add_each_answers_rows_in_token_order():
    answers = [[1, 2, 3], [1, 2, 4], [5]]
    trie = build_trie(answers)
    rows = {node: np.log(np.full(8, 1 / 8) * (node + 1) / (node + 1)) + node for node in range(len(trie))}
    starts = [-0.5, -0.25, -2.0]
    got = path_scores(trie, answers, starts, rows.__getitem__)
    want = [starts[0] + rows[0][2] + rows[1][3], starts[1] + rows[0][2] + rows[1][4], -2.0]
    assert got == [float(w) for w in want]


def _rows_of_every_task(imhi_dir):
    """(task, post) for every English task: its own IMHI file's first rows, DR's for tasks without one."""
    tasks = load_tasks().get("all", language="en")
    pairs = []
    for task in tasks:
        family = task.name.split("-")[0] if task.name.split("-")[0] in FAMILY_FILES else "DR"
        n = 2 if task.name in TWO_POSTS else 1
        pairs += [(task, post) for post in _imhi_posts(imhi_dir, family, n)]
    assert {t.name for t, _ in pairs} >= {"CAMS", "SAD", "swmh"} and len({t.name for t, _ in pairs}) == 16
    return pairs


@pytest.fixture(scope="module")
def rows(imhi_dir):
    return _rows_of_every_task(imhi_dir)


def test_trie_scores_equal_flat_scores_one_at_a_time(smollm2_gguf, rows):
    engine = load_engine(smollm2_gguf, n_ctx=1024, threads=2, slots=1, exact=True)
    analyzer = Analyzer(engine, explain=False)
    saved = {}
    try:
        for task, post in rows:
            prompt, candidates = analyzer.candidates(task.render(post, "instruction"), task, "instruction")
            got = {}
            for share in (False, True):
                engine.share_candidates = share
                before = engine.decoded_tokens
                got[share] = engine.score(prompt, candidates)
                got[share, "tokens"] = engine.decoded_tokens - before
            assert got[True] == got[False], task.name  # to the bit (see the module doc)
            assert int(np.argmax(got[True])) == int(np.argmax(got[False]))
            assert got[True, "tokens"] <= got[False, "tokens"]
            saved[task.name] = saved.get(task.name, 0) + got[False, "tokens"] - got[True, "tokens"]
    finally:
        engine.close()
    # the answer sentences of CAMS and SAD share words beyond their common prefix: the trie reads them once
    assert saved["CAMS"] > 0 and saved["SAD"] > 0, saved


def test_trie_scores_equal_flat_scores_batched_and_the_one_at_a_time_records(smollm2_gguf, rows):
    posts = list(dict.fromkeys(post for _, post in rows))[:3]
    tasks = list({t.name: t for t, _ in rows}.values())

    def records(slots: int, share: bool):
        engine = load_engine(smollm2_gguf, n_ctx=1024, threads=2, slots=slots, exact=True)
        engine.share_candidates = share
        try:
            analyzer = Analyzer(engine, explain=False)
            stream = analyzer.analyze_stream((i, p, tasks) for i, p in enumerate(posts))
            return [(r.task, r.label, r.probabilities) for _, results in stream for r in results], engine
        finally:
            engine.close()

    (flat, _), (trie, engine), (sequential, _) = records(4, False), records(4, True), records(1, True)
    assert engine.batcher.peak_busy > 1
    assert len(trie) == len(posts) * 16
    assert trie == flat == sequential  # labels and probabilities, to the bit


# -- the explanation goes on from its answer's cells ----------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 4])
def test_an_explanation_continued_from_its_answers_cells_equals_the_one_that_reads_it_again(
    smollm2_gguf, imhi_dir, slots
):
    posts = _imhi_posts(imhi_dir, "DR", 2)
    tasks = [load_tasks().task(name) for name in ("DR", "CAMS", "SAD")]

    def records(continued: bool):
        engine = load_engine(smollm2_gguf, n_ctx=1024, threads=2, slots=slots, exact=True)
        engine.continue_answers = continued
        try:
            stream = Analyzer(engine, max_tokens=16).analyze_stream((i, p, tasks) for i, p in enumerate(posts))
            got = [(r.task, r.label, r.probabilities, r.explanation) for _, results in stream for r in results]
            return got, engine.decoded_tokens
        finally:
            engine.close()

    (again, read_again), (continued, read_continued) = records(False), records(True)
    assert sum(bool(r[3]) for r in continued) >= len(continued) // 2  # SmolLM2 sometimes ends at once: most not
    assert continued == again  # labels, probabilities and explanations, to the bit
    # every explanation skips its answer sentence (all but the last token, read again for its logits)
    assert read_continued < read_again - len(posts) * len(tasks) * 2, (read_continued, read_again)
