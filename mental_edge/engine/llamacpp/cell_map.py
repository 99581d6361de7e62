"""Which cache cells each sequence holds, as the batcher's own record of what it asked llama.cpp to do.

llama.cpp reports no count of the cells in use, and counting each sequence's tokens over-counts: the tasks of one
post share the post's cells (a copy to another sequence shares them, nothing is copied), so eight slots on one
800-token post hold about 800 cells, not 6,400. Counted per slot, the batcher found "no room" in a cache that was
mostly free and left slots idle. This map mirrors the three operations that change the cache (a decoded row makes
a cell that its sequences hold; a copy lets another sequence hold a range of cells; a drop lets a sequence go of
its cells from a position on) and counts a cell while any sequence holds it, as llama.cpp frees it. Cells kept
for the ordered cache (`drop(keep=True)`: the batcher's retired sequence, which holds no positions of its own)
stay counted until the map is cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count


class CellMap:
    """Each sequence's cells in position order (cell ids), and how many sequences hold each cell."""

    def __init__(self) -> None:
        self._held: dict[int, list[int]] = {}
        self._holders: dict[int, int] = {}
        self._kept: list[int] = []
        self._ids = count()

    @property
    def used(self) -> int:
        """Cells some sequence holds."""
        return len(self._holders)

    def clear(self) -> None:
        self._held.clear()
        self._holders.clear()
        self._kept.clear()

    def place(self, seqs: Sequence[int]) -> None:
        """One decoded row: a new cell, at the next position of each of `seqs`."""
        cell = next(self._ids)
        for seq in seqs:
            self._held.setdefault(seq, []).append(cell)
        self._holders[cell] = len(seqs)

    def copy(self, src: int, dst: int, start: int = 0, end: int = -1) -> None:
        """`dst` holds `src`'s cells for positions [start, end) after the cells it holds (it holds `start`)."""
        cells = self._held.get(src, [])
        taken = cells[start:] if end < 0 else cells[start:end]
        mine = self._held.setdefault(dst, [])
        del mine[start:]
        for cell in taken:
            self._holders[cell] += 1
        mine.extend(taken)

    def drop(self, seq: int, start: int = 0, keep: bool = False) -> None:
        """`seq` holds none of its cells from position `start` on; `keep`: they stay in use all the same."""
        cells = self._held.get(seq, [])
        if keep:
            self._kept.extend(cells[start:])
            del cells[start:]
            return
        for cell in cells[start:]:
            left = self._holders[cell] - 1
            if left:
                self._holders[cell] = left
            else:
                del self._holders[cell]
        del cells[start:]
