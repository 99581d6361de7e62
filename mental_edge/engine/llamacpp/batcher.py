"""Continuous batching on llama.cpp: several requests in flight in one context.

Each step builds one batch holding, for every busy slot, either the next chunk of its prompt or the next token
of its answer, plus the candidate answers of slots being scored (each on a copy of its slot's prompt cache, so
the prompt is read once; as a token trie, engine/trie.py, so the words answers share are read once too). A
follow-up prompt that goes on with one of the answers just scored takes that answer's cells (`_take_answer`).
A new request is admitted as soon as a slot and room in the cache are free, and starts from the longest prefix
any slot already holds (the tasks of one post share the post).

On a CPU the gain comes from generation: one pass over the weights serves every slot's next token.

Two ways to keep the cache (the engine's `ordered_cells`, set by --exact on a CPU):
- ordered (--exact): results equal the one-at-a-time path's to the bit (greedy decoding). llama.cpp's CPU flash
  attention adds up a sequence's cache cells in cell order, so a sequence whose new tokens landed in cells below
  its older ones would round differently; llama.cpp places new tokens from its cache head on, and moves the head
  back to a cell freed below it (or to cell 0 when enough cells before the head are free). So within a run no cell
  is freed: cells no request needs any more pass to a retired sequence, every sequence's cells stay in position
  order, and when the cells left cannot hold the next request and what the busy ones may still place, the busy
  ones finish and the cache starts again empty. Which cells a sequence holds, and which rows share its
  micro-batch, change nothing.
- compact (the default): a cell no request needs is freed at once and llama.cpp places new tokens in the lowest
  free cells, so the cache holds only what the slots hold. Every row of a batch reads the attention mask over all
  the cells in use up to the highest one (a unified cache), which on a small model costs as much as its weights
  (SmolLM2: a prompt row 3.9 ms with an empty cache, 5.6 ms beside 7,680 cells of other posts); a compact cache
  keeps that to the posts in flight, and the batcher never has to stop and start the cache again. When the cells
  are short, the prompts idle slots keep for reuse are let go first.

`run` ends when its source of requests is exhausted. A source that never ends (a server's queue) yields `IDLE`
when nothing is waiting while slots are busy, and blocks while none is; a request's `on_text` gets its text as it
is generated, and setting its `cancelled` stops it at its next token.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from mental_edge.engine.base import IDLE, Request, Result, Sampling, TokenLogprob
from mental_edge.engine.llamacpp.cell_map import CellMap
from mental_edge.engine.text import StopText
from mental_edge.engine.trie import CandidateTrie, build_trie, path_scores
from mental_edge.errors import MentalEdgeError

__all__ = ["IDLE", "Batcher", "cells_needed"]

FOLLOW_ROOM = 64  # cache cells kept for the tokens appended after scoring (answer sentence + "Reasoning:")
SHARE_MIN = 32  # tokens of prefix worth waiting for rather than reading them again


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what the cache holds for this sequence
    req: Request | None = None
    phase: str = "idle"  # ingest -> score -> ingest (follow) -> generate
    scores: list[float] | None = None  # the candidates' log-probabilities, once the prompt is read
    pending: list[int] = field(default_factory=list)  # tokens still to feed
    need: int = 0  # cache cells this request may place at most (its prefix held by a slot is copied, not placed)
    placed: int = 0  # cache cells it has placed so far
    first: np.ndarray | None = None  # log-probabilities after the prompt's last token
    sampler: object = None  # the engine's TokenSampler while generating
    stream: StopText | None = None  # the answer's text, stop strings held back
    generated: int = 0
    text: list[str] = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # TokenLogprob per generated token, when the sampling asks
    finish_reason: str | None = None


@dataclass(frozen=True)
class _Scoring:
    """A slot's candidates in one batch: those longer than one token (`which`), their sequences, their trie."""

    which: list[int]
    seqs: list[int]
    trie: CandidateTrie


class Sampler(Protocol):
    """One generation's sampler (llama.cpp's chain: common.TokenSampler), reading the row of logits it is given."""

    def sample(self, index: int) -> int: ...
    def close(self) -> None: ...


@runtime_checkable
class BatchEngine(Protocol):
    """What the Batcher drives an engine through (LlamaEngine gives it; decoder.py documents each member):
    sequences 0..slots-1 hold the requests in flight, `score_seqs` more hold candidate answers, `retired_seq` holds
    cells no request needs (ordered cache only)."""

    slots: int
    score_seqs: int
    retired_seq: int
    n_cells: int  # cache cells in all
    n_batch: int  # rows one decode takes
    n_ctx: int  # one sequence's limit
    ordered_cells: bool  # keep every sequence's cells in position order: no cell freed within a run (--exact)
    share_candidates: bool  # candidate answers decoded as a token trie
    continue_answers: bool  # a follow-up prompt continues its answer's scored cells

    def clear_cache(self) -> None: ...
    def copy_cells(self, src: int, dst: int, start: int = 0, end: int = -1) -> None: ...
    def drop_cells(self, seq: int, start: int = 0) -> None: ...
    def decode_rows(self, rows: Sequence[tuple[int, int, int | Sequence[int], bool]]) -> None: ...
    def log_probs(self, index: int) -> np.ndarray: ...
    def token_logprob(self, index: int, token: int, top: int) -> TokenLogprob: ...
    def new_sampler(self, sampling: Sampling) -> Sampler: ...
    def token_bytes(self, token: int) -> bytes: ...
    def is_end(self, token: int) -> bool: ...


class Batcher:
    """Runs requests on an engine through its batch interface, `BatchEngine`."""

    def __init__(self, engine: BatchEngine):
        self.e: BatchEngine = engine
        self.slots = [_Slot(seq=i) for i in range(engine.slots)]
        self.temp_seqs = list(range(engine.slots, engine.slots + engine.score_seqs))
        self.retired = engine.retired_seq  # holds the cells no request needs any more, until the cache is cleared
        self.cells = CellMap()  # which cells each sequence holds: the cells in use
        self.restarts = 0  # times the cache was cleared to make room
        self.peak_busy = 0  # the most slots busy at once so far
        # rows decoded so far by what they were: "prompt" (a request's prompt), "candidates" (answers scored, the
        # trie's nodes), "follow-up" (the prompt after the scores: the label sentence and "Reasoning:"), "tokens"
        self.rows: Counter[str] = Counter()
        self._ended = False

    @property
    def busy(self) -> int:
        """Slots holding a request now (admitted ones included)."""
        return sum(s.req is not None for s in self.slots)

    # -- admission ----------------------------------------------------------------------------------

    def run(self, requests: Iterable[Request | object]) -> Iterator[Result]:
        waiting = deque()
        source = iter(requests)
        self._clear()
        try:
            while True:
                self._admit(source, waiting)
                busy = [s for s in self.slots if s.req is not None]
                self.peak_busy = max(self.peak_busy, len(busy))
                if not busy:
                    if self._ended:
                        return
                    continue  # the source said IDLE with nothing busy: it blocks on the next call
                yield from self._step(busy)
        finally:
            for slot in self.slots:
                if slot.sampler is not None:
                    slot.sampler.close()
            self.e.clear_cache()

    def _admit(self, source, waiting: deque) -> None:
        while True:
            idle = [s for s in self.slots if s.req is None]
            if not idle:
                return
            if not waiting:
                req = next(source, None)
                if req is None:
                    self._ended = True
                    return
                if req is IDLE:
                    return
                waiting.append(req)
            req = waiting[0]
            total = cells_needed(req, self.e.share_candidates)
            if total > self.e.n_cells:
                raise MentalEdgeError(f"a request needs {total} tokens of cache; the cache holds {self.e.n_cells}")
            if self._worth_waiting(req.prompt):
                return
            need = self._room_for(req.prompt, total)
            if need is None:
                return
            waiting.popleft()
            self._start(req, need, idle)

    def _worth_waiting(self, prompt: list[int]) -> bool:
        """True while a busy slot is still reading a prefix of `prompt` that no slot holds yet (the other tasks
        of the same post): the request then starts from a copy of it instead of reading the post again."""
        limit = len(prompt) - 1
        held = max(min(_common(s.tokens, prompt), limit) for s in self.slots)
        coming = max(
            (
                min(_common(s.tokens + s.pending, prompt), limit)
                for s in self.slots
                if s.req is not None and s.phase == "ingest"
            ),
            default=0,
        )
        return coming >= held + SHARE_MIN

    def _room_for(self, prompt: list[int], total: int) -> int | None:
        """The cells a request of `total` cells at most (`cells_needed`) may place, when the cells free hold them
        besides what the busy requests may still place; else None. Short of cells, a compact cache lets the idle
        slots' prompts go; an ordered one, once nothing is busy, starts again empty (see the module doc)."""
        busy = [s for s in self.slots if s.req is not None]
        ahead = sum(max(s.need - s.placed, 0) for s in busy)
        need = total - self._held_prefix(prompt)
        if self.cells.used + ahead + need <= self.e.n_cells:
            return need
        if not self.e.ordered_cells:
            for slot in self.slots:
                if slot.req is None and slot.tokens:
                    self._retire(slot.seq, 0)
                    slot.tokens = []
            need = total - self._held_prefix(prompt)
            return need if self.cells.used + ahead + need <= self.e.n_cells else None
        if busy:
            return None
        self._clear()
        self.restarts += 1
        return total

    def _held_prefix(self, prompt: list[int]) -> int:
        """The longest prefix of `prompt` a slot holds, as `_load_prefix` takes it (copied, not placed)."""
        return max(min(_common(s.tokens, prompt), len(prompt) - 1) for s in self.slots)

    def _clear(self) -> None:
        self.e.clear_cache()
        self.cells.clear()
        for slot in self.slots:
            slot.tokens = []

    def _copy(self, src: int, dst: int, start: int = 0, end: int = -1) -> None:
        self.e.copy_cells(src, dst, start, end)
        self.cells.copy(src, dst, start, end)

    def _retire(self, seq: int, start: int) -> None:
        """Drop `seq`'s cells from position `start` on: freed in a compact cache, kept by the retired sequence in
        an ordered one (see the module doc)."""
        if self.e.ordered_cells:
            self.e.copy_cells(seq, self.retired, start, -1)
        self.e.drop_cells(seq, start)
        self.cells.drop(seq, start, keep=self.e.ordered_cells)

    def _start(self, req: Request, need: int, idle: list[_Slot]) -> None:
        slot = max(idle, key=lambda s: _common(s.tokens, req.prompt))
        self._load_prefix(slot, req.prompt)
        slot.req, slot.need, slot.placed, slot.phase = req, need, 0, "ingest"
        slot.generated, slot.text, slot.scores, slot.logprobs = 0, [], None, []

    def _load_prefix(self, slot: _Slot, prompt: list[int]) -> None:
        """Keep or copy the longest cached prefix of `prompt`; queue the rest (at least the last token)."""
        limit = len(prompt) - 1
        own = min(_common(slot.tokens, prompt), limit)
        donor = max(self.slots, key=lambda s: _common(s.tokens, prompt) if s is not slot else -1)
        theirs = min(_common(donor.tokens, prompt), limit) if donor is not slot else 0
        if theirs > own:
            self._retire(slot.seq, 0)
            self._copy(donor.seq, slot.seq, 0, theirs)
            own = theirs
        else:
            self._retire(slot.seq, own)
        slot.tokens = list(prompt[:own])
        slot.pending = list(prompt[own:])

    # -- one step -----------------------------------------------------------------------------------

    def _step(self, busy: list[_Slot]) -> Iterator[Result]:
        budget = self.e.n_batch
        parts = []  # (slot, kind, tokens, extra)
        for slot in busy:  # answers first: one token each keeps every generation moving
            if slot.phase == "generate":
                parts.append((slot, "token", slot.pending, None))
                budget -= 1
        free_temps = list(self.temp_seqs)
        for slot in busy:
            if slot.phase == "ingest" and budget > 0:
                chunk = slot.pending[:budget]
                parts.append((slot, "ingest", chunk, None))
                budget -= len(chunk)
            elif slot.phase == "score":
                scored = self._plan_scoring(slot, budget, free_temps)
                if scored is not None:
                    parts.append(scored)
                    budget -= len(scored[3].trie)
        if not parts:
            raise MentalEdgeError("the batch could not make progress (n_batch too small for the candidates)")
        index = self._decode(parts)
        yield from self._advance(parts, index)

    def _plan_scoring(self, slot: _Slot, budget: int, free_temps: list[int]):
        """Candidates longer than one token each get a sequence on a copy of the slot's cache; their tokens go
        in one batch as a trie (engine/trie.py: a token they share is one row in all their sequences)."""
        which = [i for i, c in enumerate(slot.req.candidates) if len(c) > 1]
        trie = build_trie([slot.req.candidates[i] for i in which], share=self.e.share_candidates)
        if len(which) > len(free_temps) or len(trie) > budget:
            if len(which) > len(self.temp_seqs) or len(trie) > self.e.n_batch:
                raise MentalEdgeError("too many or too long candidate answers for one batch")
            return None
        seqs = [free_temps.pop() for _ in which]
        for seq in seqs:
            self._copy(slot.seq, seq, 0, len(slot.tokens))
        return (slot, "score", None, _Scoring(which, seqs, trie))

    def _decode(self, parts) -> dict:
        """Fill one batch; returns where each part's logits sit."""
        rows = []  # (token, position, sequence, logits wanted)
        index = {}
        for slot, kind, tokens, extra in parts:
            if kind == "score":
                index[id(slot)] = len(rows)  # where the trie's first node sits
                trie, start = extra.trie, len(slot.tokens)
                for tok, depth, members in zip(trie.tokens, trie.depths, trie.members):
                    rows.append((tok, start + depth, tuple(extra.seqs[m] for m in members), True))
                slot.placed += len(trie)
                self.rows["candidates"] += len(trie)
                continue
            for j, tok in enumerate(tokens):
                last = j == len(tokens) - 1
                want = last and (kind == "token" or len(tokens) == len(slot.pending))
                rows.append((tok, len(slot.tokens) + j, slot.seq, want))
            slot.placed += len(tokens)
            self.rows["tokens" if kind == "token" else "prompt" if slot.scores is None else "follow-up"] += len(tokens)
            index[id(slot)] = len(rows) - 1
        n = len(rows)
        taken = self.cells.used
        if taken + n > self.e.n_cells:  # a request placed more than cells_needed allowed: refuse, not misplace
            raise MentalEdgeError(f"the batch needs {n} cache cells; {self.e.n_cells - taken} are left")
        self.e.decode_rows(rows)
        for _, _, seqs, _ in rows:
            self.cells.place((seqs,) if isinstance(seqs, int) else seqs)
        return index

    def _advance(self, parts, index) -> Iterator[Result]:
        for slot, kind, tokens, extra in parts:
            if kind == "score":
                if self._finish_scoring(slot, extra, index):
                    yield self._finish(slot)
                continue
            slot.tokens.extend(tokens)
            del slot.pending[: len(tokens)]
            if kind == "ingest" and slot.pending:
                continue
            done = self._after_logits(slot, index[id(slot)])
            if done:
                yield self._finish(slot)

    def _after_logits(self, slot: _Slot, at: int) -> bool:
        """The slot's last fed token has logits at batch index `at`: move it on. True when the request is done."""
        req = slot.req
        if slot.phase == "ingest" and req.candidates and slot.scores is None:
            slot.first = self.e.log_probs(at)
            slot.scores = [float(slot.first[c[0]]) for c in req.candidates]
            if any(len(c) > 1 for c in req.candidates):
                slot.phase = "score"
                return False
            return self._follow(slot, at)
        if slot.phase == "ingest" and slot.scores is None:
            slot.scores = []
            return self._follow(slot, at)
        if slot.phase == "ingest":  # the follow-up prompt is read: start generating
            self._start_generating(slot)
        return self._sample(slot, at)

    def _start_generating(self, slot: _Slot) -> None:
        slot.phase = "generate"
        slot.sampler = self.e.new_sampler(slot.req.sampling)
        slot.stream = StopText(slot.req.stop)

    def _finish_scoring(self, slot: _Slot, scoring: _Scoring, index) -> bool:
        base = index[id(slot)]
        answers = [slot.req.candidates[i] for i in scoring.which]
        starts = [slot.scores[i] for i in scoring.which]
        totals = path_scores(scoring.trie, answers, starts, lambda node: self.e.log_probs(base + node))
        for i, total in zip(scoring.which, totals):
            slot.scores[i] = total
        done = self._follow(slot, None, scoring)
        for seq in scoring.seqs:
            self._retire(seq, 0)
        return done

    def _follow(self, slot: _Slot, at: int | None, scoring: _Scoring | None = None) -> bool:
        """Scores are in: go on to the follow-up prompt, or finish. `at`: where the cached prompt's logits sit,
        if they are still in the batch (a follow-up prompt equal to the prompt is then not read again);
        `scoring`: the answers just scored, whose cells the follow-up prompt may go on from."""
        req = slot.req
        if req.follow is None:
            return True
        prompt = list(req.follow(slot.scores))
        if len(prompt) > self.e.n_ctx:
            raise MentalEdgeError(f"the prompt has {len(prompt)} tokens; the context holds {self.e.n_ctx}")
        if at is not None and prompt == slot.tokens:
            self._start_generating(slot)
            return self._sample(slot, at)
        if scoring is not None and self.e.continue_answers:
            self._take_answer(slot, prompt, scoring)
        self._load_prefix(slot, prompt)
        slot.phase = "ingest"
        return False

    def _take_answer(self, slot: _Slot, prompt: list[int], scoring: _Scoring) -> None:
        """When `prompt` goes on with one of the answers just scored ("<answer> Reasoning:"), that answer's cells
        become the slot's, so the sentence is not read again. They were placed after every cell the slot holds
        (no cell is freed within a run), so its cells stay in position order."""
        n = len(slot.tokens)
        if prompt[:n] != slot.tokens:
            return
        best: tuple[list[int], int] = ([], -1)
        for k, i in enumerate(scoring.which):
            path = list(slot.req.candidates[i][:-1])
            if len(path) > len(best[0]) and prompt[n : n + len(path)] == path and n + len(path) < len(prompt):
                best = (path, scoring.seqs[k])
        if best[0]:
            self._copy(best[1], slot.seq, n, -1)
            slot.tokens.extend(best[0])

    def _sample(self, slot: _Slot, at: int) -> bool:
        req = slot.req
        if len(slot.tokens) >= self.e.n_ctx:
            slot.finish_reason = "context"
            return True
        if req.cancelled:
            slot.finish_reason = "cancelled"
            return True
        token = slot.sampler.sample(at)
        if token < 0:  # the output grammar allows no token
            slot.finish_reason = "grammar"
            return True
        if self.e.is_end(token):
            slot.finish_reason = "stop"
            return True
        slot.generated += 1
        if req.sampling.logprobs is not None:  # the row's logits are still those the token was sampled from
            slot.logprobs.append(self.e.token_logprob(at, token, req.sampling.logprobs))
            if req.on_token is not None:
                req.on_token(slot.logprobs[-1])
        out = slot.stream.feed(self.e.token_bytes(token))
        slot.text.append(out)
        if out and req.on_text is not None:
            req.on_text(out)
        if slot.stream.stopped:  # the stop text and what follows it are dropped
            slot.finish_reason = "stop"
            return True
        if slot.generated >= req.max_tokens:
            slot.finish_reason = "length"
            return True
        slot.pending = [token]
        return False

    def _finish(self, slot: _Slot) -> Result:
        req = slot.req
        if slot.stream is not None:
            rest = slot.stream.flush()
            slot.text.append(rest)
            if rest and req.on_text is not None:
                req.on_text(rest)
        result = Result(req, slot.scores or [], "".join(slot.text), slot.finish_reason, slot.generated, slot.logprobs)
        if slot.sampler is not None:
            slot.sampler.close()
        slot.req, slot.sampler, slot.stream, slot.phase, slot.pending = None, None, None, "idle", []
        slot.finish_reason = None
        return result


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def cells_needed(req: Request, share: bool = True) -> int:
    """Cache cells a request may occupy at its largest in the batcher (`share`: its candidates as a trie)."""
    scoring = len(build_trie(req.candidates, share=share))
    follow = FOLLOW_ROOM if req.follow is not None and req.candidates else 0
    return len(req.prompt) + scoring + follow + (req.max_tokens if req.follow is not None else 0)
