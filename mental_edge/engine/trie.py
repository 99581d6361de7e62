"""Candidate answers as a token trie: every token several answers share is decoded once.

The answers to score follow one prompt. To score answer `c`, the model reads `c[:-1]` after the prompt: the
logits after the prompt give `c[0]`'s log-probability, those after `c[j]` give `c[j + 1]`'s. Answers that begin
alike ("This post shows the stress cause related to work." / "... related to school.") read their shared tokens
once here: a node is one decoded token, at one position, in the sequence of every answer it belongs to (llama.cpp
lets one batch token belong to several sequences, as its tree drafting does), so each answer attends to exactly
the tokens it would read on its own, and gets the same log-probabilities from fewer tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CandidateTrie:
    """The tokens to decode after the prompt, parents before children (each answer's nodes in position order)."""

    tokens: tuple[int, ...]  # node i's token
    depths: tuple[int, ...]  # node i's position after the prompt (0: right after it)
    members: tuple[tuple[int, ...], ...]  # the answers (indices into the given list) node i belongs to
    paths: tuple[tuple[int, ...], ...]  # answer k's nodes: its tokens but the last, in order

    def __len__(self) -> int:
        return len(self.tokens)


def build_trie(answers: Sequence[Sequence[int]], *, share: bool = True) -> CandidateTrie:
    """The nodes for `answers` (each answer's tokens after the prompt). `share=False` gives every answer nodes of
    its own (the flat layout, for comparison)."""
    index: dict[tuple[int, int, int], int] = {}  # (owner, parent node or -1, token) -> node
    tokens, depths, members, paths = [], [], [], []
    for k, answer in enumerate(answers):
        parent, path = -1, []
        for depth, token in enumerate(answer[:-1]):
            key = (0 if share else k, parent, token)
            node = index.get(key)
            if node is None:
                node = index[key] = len(tokens)
                tokens.append(token)
                depths.append(depth)
                members.append([])
            members[node].append(k)
            path.append(node)
            parent = node
        paths.append(tuple(path))
    return CandidateTrie(tuple(tokens), tuple(depths), tuple(tuple(m) for m in members), tuple(paths))


def trie_size(answers: Sequence[Sequence[int]]) -> int:
    """Tokens the trie of `answers` decodes."""
    return len(build_trie(answers))


def path_scores(
    trie: CandidateTrie,
    answers: Sequence[Sequence[int]],
    starts: Sequence[float],
    node_log_probs: Callable[[int], np.ndarray],
) -> list[float]:
    """Each answer's total log-probability: `starts[k]` is answer k's first token's (read after the prompt), and
    `node_log_probs(i)` gives the log-probabilities after node i (read once per node, however many answers share
    it). Added up in token order, as answer by answer would."""
    rows: dict[int, np.ndarray] = {}
    totals = []
    for answer, path, total in zip(answers, trie.paths, starts):
        for j, node in enumerate(path):
            if node not in rows:
                rows[node] = node_log_probs(node)
            total += float(rows[node][answer[j + 1]])
        totals.append(total)
    return totals
