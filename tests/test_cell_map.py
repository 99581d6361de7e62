"""The batcher's record of the cells in use (engine/llamacpp/cell_map.py) against llama.cpp's own rules, written
out here as llama.cpp's cache keeps them: a cell has a position and the set of sequences holding it; a copy adds the
destination to the source's cells in a position range; a removal takes a sequence off its cells from a position
on; a cell no sequence holds is free."""

import random

from mental_edge.engine.llamacpp.cell_map import CellMap


class PositionCache:
    def __init__(self):
        self.cells: list[tuple[int, set[int]]] = []  # (position, sequences)

    def used(self) -> int:
        return sum(bool(seqs) for _, seqs in self.cells)

    def length(self, seq: int) -> int:
        return sum(seq in seqs for _, seqs in self.cells)

    def place(self, seqs) -> None:
        self.cells.append((self.length(seqs[0]), set(seqs)))

    def copy(self, src, dst, start, end) -> None:
        for pos, seqs in self.cells:
            if src in seqs and pos >= start and (end < 0 or pos < end):
                seqs.add(dst)

    def remove(self, seq, start) -> None:
        for pos, seqs in self.cells:
            if pos >= start:
                seqs.discard(seq)


def test_cells_in_use_match_llama_cpp_s_rules_through_random_copies_and_drops():
    rng = random.Random(7)
    for _ in range(40):
        ours, theirs = CellMap(), PositionCache()
        for _ in range(300):
            seq = rng.randrange(6)
            n = theirs.length(seq)
            op = rng.random()
            if op < 0.5:  # a row: alone, or shared by sequences holding the same positions (a trie node)
                alike = [s for s in range(6) if theirs.length(s) == n and rng.random() < 0.3]
                seqs = sorted({seq, *alike})
                ours.place(seqs)
                theirs.place(seqs)
            elif op < 0.75:  # a prefix, or the rest of an answer after the positions `dst` holds
                src = rng.randrange(6)
                start = rng.choice([0, n])
                if start == 0:
                    ours.drop(seq, 0)
                    theirs.remove(seq, 0)
                end = rng.choice([-1, rng.randrange(theirs.length(src) + 1)])
                if start <= theirs.length(src) and (end < 0 or end >= start):
                    ours.copy(src, seq, start, end)
                    theirs.copy(src, seq, start, end)
            else:
                start = rng.randrange(n + 1)
                ours.drop(seq, start)
                theirs.remove(seq, start)
            assert ours.used == theirs.used()


def test_shared_cells_count_once_and_free_with_their_last_holder():
    cells = CellMap()
    for _ in range(100):
        cells.place([0])
    for seq in range(1, 8):
        cells.copy(0, seq, 0, 100)  # eight tasks of one post
        cells.place([seq])
    assert cells.used == 107
    cells.drop(0)
    assert cells.used == 107  # the post is still held by the other seven
    for seq in range(1, 8):
        cells.drop(seq, 100)
    assert cells.used == 100
    cells.drop(3, 50, keep=True)  # the ordered cache keeps what it lets go until it is cleared
    for seq in range(1, 8):
        cells.drop(seq)
    assert cells.used == 50
    cells.clear()
    assert cells.used == 0
