"""The llama.cpp backend for decoder-only GGUF models, through llama-cpp-python's low-level API.

One context holds sequence 0 (the running prompt, reused from call to call by its longest common prefix) and
spare sequences for scoring candidate answers side by side on a shared copy of the prompt's cache. With more than
one slot, `run_requests` keeps several requests in flight through `batcher.Batcher`, which drives the engine
through its batch interface (the section of that name below) and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
from gguf import GGMLQuantizationType
from llama_cpp import _internals

from mental_edge.engine.base import Generation, ModelInfo, Request, Sampling
from mental_edge.engine.llamacpp.batcher import Batcher, cells_needed
from mental_edge.engine.llamacpp.common import (
    FILE_TYPES,
    ContextOverflow,
    LlamaCppEngine,
    check_gguf,
    default_gpu_layers,
    default_threads,
    system_info,
)
from mental_edge.engine.sizing import Sizing, available_memory, cache_bytes_per_token, choose
from mental_edge.engine.trie import build_trie, path_scores
from mental_edge.errors import MentalEdgeError

__all__ = ["ContextOverflow", "LlamaEngine", "system_info", "CPU_VALUE_TYPE"]

DEFAULT_CTX = 2048  # the published MentaLLaMA evaluation used max_length=2048 (prompt + answer)
SCORE_SEQS = 16  # sequences available for scoring candidates side by side
# Slots and cache cells come from the model's per-token cache size and the memory free (engine/sizing.py).
# exact (--exact): the rules below and paired output rows, which make batched records equal the sequential ones
# to the bit on a CPU. They cost a quarter of a batched SmolLM2 analysis (benchmarks/exactness.py; the figure in
# docs/performance.md), so they are off by default: the same input and settings still give the same records run
# to run, but a record may then depend on what else was in the batch or the cache.
DEFAULT_EXACT = False
# llama.cpp's CPU kernels take another code path (other rounding) for larger micro-batches, so that a token's
# logits would depend on how the tokens around it were split: on a cached prefix, on the other posts in the
# batch. Micro-batches of 32 tokens keep every token on one path, so results do not depend on caching or
# batching (measured on the Q4_1 test model: logits equal to the bit), for about 11% of prompt speed on a CPU.
CPU_UBATCH = 32
# llama.cpp's CPU flash attention reads a token decoded alone on another path when the cache's keys and values are
# f16 (or f32) and 512 cells or more are in use, so that token's logits depend on how many cells the cache holds,
# other posts' included: up to 0.56 of a logit on the test model. bf16 values keep every row on the one path (f32
# sums); keys stay f16. Against transformers f32 on SmolLM2 converted to f16 (every position of 6 IMHI prompts):
# worst logit difference 0.079 with bf16 values and 0.154 with f16 ones, mean error of the next token's
# log-probability 0.0022 nats either way; a token decoded alone costs about 7% more at 430 cells (the split path
# is the quicker one); same size. q8_0 values: 0.21 and 0.0052. `python benchmarks/cache_types.py` measures it.
CPU_VALUE_TYPE = GGMLQuantizationType.BF16


@dataclass
class _KeptAnswers:
    """The last scoring's answers, left in their sequences for a prompt that continues one of them (`_ingest`)."""

    start: int  # the position they start at (the scored prompt's length)
    paths: list[tuple[tuple[int, ...], int]]  # each answer's decoded tokens (all but its last) and its sequence
    cells: int  # cells they hold
    held: bool = False  # one was taken into sequence 0; the cells of the rest are held by `retired_seq`


class LlamaEngine(LlamaCppEngine):
    share_candidates = True  # candidate answers decoded as a token trie (False: each on its own, for comparison)
    continue_answers = True  # a follow-up prompt continues its answer's scored cells (False: reads it again)
    decoded_tokens = 0  # tokens fed to llama_decode so far (the trie's saving is counted in these)
    _kept: _KeptAnswers | None = None

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        gpu_layers: int | None = None,
        n_batch: int = 512,
        slots: int | None = None,
        exact: bool | None = None,
        name: str | None = None,
    ):
        path = Path(path)
        check_gguf(path)
        threads = threads or default_threads()
        gpu_layers = default_gpu_layers() if gpu_layers is None else gpu_layers
        self._model = self._load_model(path, gpu_layers)
        n_ctx_train = self._model.n_ctx_train()
        self.n_ctx = min(n_ctx or DEFAULT_CTX, n_ctx_train)
        self.n_batch = n_batch
        self.exact = DEFAULT_EXACT if exact is None else exact
        cpu_exact = self.exact and gpu_layers == 0  # the rules above hold llama.cpp's CPU kernels to one path
        self.n_ubatch = CPU_UBATCH if cpu_exact else n_batch
        self.value_type = CPU_VALUE_TYPE if cpu_exact else GGMLQuantizationType.F16
        self.flash_attn = "on" if cpu_exact else "auto"  # on the CPU, cells summed in cell order (see above)
        self.pair_outputs = cpu_exact  # see _pair_outputs
        self.ordered_cells = cpu_exact  # the batcher frees no cell within a run (engine/llamacpp/batcher.py)
        meta = self._model.metadata()
        sizing = self._cache_cells(meta, slots, gpu=gpu_layers != 0)
        self.slots, self.n_cells = sizing.slots, sizing.cells
        self.score_seqs = SCORE_SEQS
        self.retired_seq = max(self.slots, 1) + SCORE_SEQS  # the batcher's holder of cells no request needs
        self._ctx = self._new_context(threads)
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=SCORE_SEQS, verbose=False)
        self._n_vocab = self._model.n_vocab()
        self._cached: list[int] = []  # the tokens sequence 0 holds in the cache
        self._control_re: re.Pattern | None = None
        self.info = ModelInfo(
            path=path,
            name=name or meta.get("general.name") or path.stem,
            architecture=meta.get("general.architecture", "unknown"),
            quantization=FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown"),
            n_ctx_train=n_ctx_train,
            n_params=self._model.n_params(),
            chat_template=meta.get("tokenizer.chat_template"),
            add_bos=bool(self._model.add_bos_token()),
            engine=f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
            metadata=meta,
        )
        self.settings = {
            "n_ctx": self.n_ctx,
            "threads": threads,
            "gpu_layers": gpu_layers,
            "n_batch": n_batch,
            "ubatch": self.n_ubatch,
            "slots": self.slots,
            "cache_cells": self.n_cells,
            "cache_sizing": sizing.why,
            "exact": self.exact,
            "flash_attn": self.flash_attn,
            "cache_types": f"keys f16, values {self.value_type.name.lower()}",
        }
        self.batcher = None  # the last batched run's Batcher, for its counts

    def _cache_cells(self, meta: dict, slots: int | None, gpu: bool) -> Sizing:
        """Slots and cells from the model's per-token cache size and the memory free now (engine/sizing.py)."""
        return choose(
            per_token=cache_bytes_per_token(meta),  # f16 keys, f16 or bf16 values: 2 bytes each
            n_ctx=self.n_ctx,
            n_ctx_train=self._model.n_ctx_train(),
            available=available_memory(gpu),
            slots=slots,
        )

    def _new_context(self, threads: int):
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_cells
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_ubatch
        params.n_threads = params.n_threads_batch = threads
        params.n_seq_max = self.retired_seq + 1
        params.kv_unified = True  # sequences share one cache, so a prompt copied to another sequence costs nothing
        if self.flash_attn == "on":
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.type_v = self.value_type
        params.no_perf = False  # llama.cpp's default keeps no timings, and perf() would report zeros
        return _internals.LlamaContext(model=self._model, params=params, verbose=False)

    # -- the cache ------------------------------------------------------------------------------

    def _decode(self, tokens: Sequence[int], start: int, seq: int = 0) -> None:
        """Feed tokens at positions start.. of one sequence, in batches of n_batch; the last token's logits are
        kept, computed with a partner row (see _pair_outputs) whenever there are two tokens or more."""
        cuts = list(range(0, len(tokens), self.n_batch)) + [len(tokens)]
        if len(tokens) >= 2 and (cuts[-1] - cuts[-2]) % self.n_ubatch == 1:
            cuts.insert(-1, len(tokens) - 2)  # the last micro-batch would hold the last token alone
        for i, j in zip(cuts, cuts[1:]):
            if j > i:
                self._fill_batch([(seq, start + i, tokens[i:j])], logits="last" if j == len(tokens) else "none")
                self._run_batch()

    def _fill_batch(self, parts, logits: str) -> list[int]:
        """parts: (seq, first position, tokens). Returns the batch index of each part's first token."""
        batch = self._batch.batch
        n = 0
        firsts = []
        for seq, start, toks in parts:
            firsts.append(n)
            for j, tok in enumerate(toks):
                _put(batch, n, tok, start + j, seq, logits == "all")
                n += 1
        if logits == "last" and n:
            batch.logits[n - 1] = True
        batch.n_tokens = n
        self._last = n - 1  # where the last token's logits sit
        return firsts

    def _run_batch(self) -> None:
        self._pair_outputs()
        self.decoded_tokens += self._batch.batch.n_tokens
        try:
            self._ctx.decode(self._batch)
        except RuntimeError as exc:
            self._forget()
            raise MentalEdgeError(f"llama.cpp could not evaluate the batch ({exc}); the cache was cleared") from None

    def _pair_outputs(self) -> None:
        """Give a micro-batch's lone output row a partner from the same micro-batch.

        llama.cpp computes the output layer of a single row on another kernel than that of two rows or more,
        with other rounding, so the logits of a prompt's last token would depend on how the prompt was split (on
        what the cache held). With a partner they do not. A token decoded alone (each generated token) keeps the
        single-row kernel: always the same for it, and no extra row to pay for."""
        if not self.pair_outputs:  # only exact mode needs it (DEFAULT_EXACT)
            return
        batch = self._batch.batch
        n, step = batch.n_tokens, self.n_ubatch
        for start in range(0, n, step):
            end = min(start + step, n)
            outputs = [i for i in range(start, end) if batch.logits[i]]
            if len(outputs) == 1:
                other = next((i for i in range(start, end) if not batch.logits[i]), None)
                if other is not None:
                    batch.logits[other] = True

    def _forget(self) -> None:
        self._ctx.kv_cache_clear()
        self._cached = []
        self._kept = None

    def _ingest(self, tokens: Sequence[int], extra: int = 0) -> int:
        """Make sequence 0 hold exactly `tokens`, with the last token's logits ready; `extra`: cells the caller
        places after them (scored answers, generated tokens). Returns tokens reused."""
        if not tokens:
            raise MentalEdgeError("empty prompt: nothing to evaluate")
        if len(tokens) > self.n_ctx:
            raise ContextOverflow(f"the prompt has {len(tokens)} tokens; the context holds {self.n_ctx}")
        keep = 0
        # the last token is read again for its logits, with the one before it as its partner (_pair_outputs)
        limit = min(len(self._cached), max(len(tokens) - 2, 0))
        while keep < limit and self._cached[keep] == tokens[keep]:
            keep += 1
        keep = self._settle_kept(tokens, keep, extra)
        self._ctx.kv_cache_seq_rm(0, keep, -1)
        del self._cached[keep:]
        try:
            self._decode(tokens[keep:], keep)
        except BaseException:
            self._forget()
            raise
        self._cached.extend(tokens[keep:])
        return keep

    def _settle_kept(self, tokens: Sequence[int], keep: int, extra: int) -> int:
        """Before sequence 0 is cut to `keep`: take in the kept answer `tokens` go on with (its cells become
        sequence 0's, so the sentence is not read again), or let the kept cells go. They are freed only once no
        cell of sequence 0 lies above them: llama.cpp places new tokens in the lowest free cells and sums a
        sequence's cells in cell order, so sequence 0's cells stay in position order (see batcher.py)."""
        kept = self._kept
        if kept is None:
            return keep
        if not kept.held and self.continue_answers and keep == kept.start == len(self._cached):
            path, seq = max(
                ((p, q) for p, q in kept.paths if list(tokens[keep : keep + len(p)]) == list(p)),
                key=lambda pq: len(pq[0]),
                default=((), -1),
            )
            fits = len(tokens) + extra + kept.cells - len(path) <= self.n_cells
            if path and keep + len(path) <= len(tokens) - 2 and fits:
                self._ctx.kv_cache_seq_cp(seq, 0, keep, -1)
                self._cached.extend(path)
                for _, other in kept.paths:
                    self._ctx.kv_cache_seq_cp(other, self.retired_seq, kept.start, -1)
                    self._ctx.kv_cache_seq_rm(other, -1, -1)
                kept.held, kept.cells = True, kept.cells - len(path)
                return keep + len(path)
        if kept.held and keep > kept.start and len(tokens) + extra + kept.cells <= self.n_cells:
            return keep
        self._release_kept()
        return min(keep, kept.start)

    def _release_kept(self) -> None:
        kept, self._kept = self._kept, None
        for seq in [self.retired_seq] if kept.held else [q for _, q in kept.paths]:
            self._ctx.kv_cache_seq_rm(seq, -1, -1)

    # -- the batch interface (batcher.BatchEngine, which the Batcher is typed against) ----------------------

    def clear_cache(self) -> None:
        """Empty the cache: every sequence's cells free, the next tokens placed from cell 0."""
        self._forget()

    def reset(self) -> None:
        self._forget()

    def copy_cells(self, src: int, dst: int, start: int = 0, end: int = -1) -> None:
        """Let sequence `dst` share `src`'s cells for positions [start, end) (-1: to its end); nothing is copied."""
        self._ctx.kv_cache_seq_cp(src, dst, start, end)

    def drop_cells(self, seq: int, start: int = 0) -> None:
        """Sequence `seq` no longer holds its positions from `start` on (a cell no sequence holds is free)."""
        self._ctx.kv_cache_seq_rm(seq, start, -1)

    def decode_rows(self, rows: Sequence[tuple[int, int, int | Sequence[int], bool]]) -> None:
        """One llama_decode of at most n_batch rows (token, position, sequence or sequences, logits wanted);
        afterwards `log_probs(i)` reads row i's. A row in several sequences (at most `score_seqs`; a shared answer
        token) is one cell they all hold; those sequences must hold the same positions before it. A micro-batch's
        lone output row gets a partner (see `_pair_outputs`), so a row's logits do not depend on the other rows.
        On failure the cache is cleared and MentalEdgeError raised."""
        if len(rows) > self.n_batch:
            raise MentalEdgeError(f"a batch of {len(rows)} tokens; the engine decodes at most {self.n_batch}")
        batch = self._batch.batch
        for n, (token, pos, seq, logits) in enumerate(rows):
            _put(batch, n, token, pos, seq, logits)
        batch.n_tokens = len(rows)
        self._run_batch()

    # -- batching -------------------------------------------------------------------------------

    def batch_runner(self) -> Batcher | None:
        """A Batcher over `slots` sequences (kept as `batcher`, for its counts); None with one slot."""
        if self.slots <= 1:
            return None
        self.batcher = Batcher(self)
        return self.batcher

    def check_request(self, req: Request) -> None:
        need = cells_needed(req, self.share_candidates)
        if self.slots > 1 and need > self.n_cells:
            raise MentalEdgeError(f"the request needs {need} tokens of cache; the cache holds {self.n_cells}")

    # -- scoring --------------------------------------------------------------------------------

    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        longest = max((len(c) for c in continuations), default=0)
        if len(prompt) + longest > self.n_ctx:
            raise ContextOverflow(
                f"prompt and answer need {len(prompt) + longest} tokens; the context holds {self.n_ctx}"
            )
        self._ingest(prompt, extra=min(self.n_batch, len(build_trie(continuations, share=self.share_candidates))))
        first = self.log_probs(self._last)
        scores = [float(first[c[0]]) if c else 0.0 for c in continuations]
        held = self._kept.cells if self._kept is not None else 0
        groups = list(self._score_groups(continuations, room=min(self.n_batch, self.n_cells - len(prompt) - held)))
        for group in groups:  # answers are kept for a follow-up unless older kept cells still stand below them
            self._score_group(len(prompt), group, continuations, scores, keep=len(groups) == 1 and held == 0)
        return scores

    def prompt_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Raw logits after every token of `tokens` (row i: the next token after tokens[:i+1]), read from an empty
        cache, which is left empty again. For `mental-edge verify`, which compares them with a reference."""
        if not tokens or len(tokens) > self.n_ctx:
            raise ContextOverflow(f"the prompt has {len(tokens)} tokens; the context holds {self.n_ctx}")
        self.clear_cache()
        rows = []
        try:
            for start in range(0, len(tokens), self.n_batch):
                part = tokens[start : start + self.n_batch]
                self.decode_rows([(tok, start + j, 0, True) for j, tok in enumerate(part)])
                rows += [self._logits(j) for j in range(len(part))]
        finally:
            self.clear_cache()
        return np.stack(rows)

    def _score_groups(self, continuations, room: int) -> Iterator[list[int]]:
        """Indices of continuations whose trie fits together in `room` cells (of the batch and of the cache after
        the prompt) and in the spare sequences."""
        group: list[int] = []
        for i, cont in enumerate(continuations):
            if len(cont) < 2:
                continue
            grown = [*group, i]
            too_big = len(build_trie([continuations[j] for j in grown], share=self.share_candidates)) > room
            if group and (too_big or len(group) == SCORE_SEQS - 1):
                yield group
                grown = [i]
            group = grown
        if group:
            yield group

    def _score_group(self, n_prompt: int, group: list[int], continuations, scores: list[float], keep: bool) -> None:
        """The group's answers as a token trie (engine/trie.py): sequence k + 1 is answer group[k], on a copy of
        the prompt's cells; a token several answers share is one row in all their sequences. `keep`: leave them
        there for a follow-up prompt that continues one (`_settle_kept`)."""
        answers = [continuations[i] for i in group]
        trie = build_trie(answers, share=self.share_candidates)
        for k in range(len(group)):
            self._ctx.kv_cache_seq_cp(0, k + 1, 0, n_prompt)
        try:
            rows = [
                (tok, n_prompt + depth, tuple(k + 1 for k in members), True)
                for tok, depth, members in zip(trie.tokens, trie.depths, trie.members)
            ]
            self.decode_rows(rows)
            totals = path_scores(trie, answers, [scores[i] for i in group], self.log_probs)
            for i, total in zip(group, totals):
                scores[i] = total
            if keep and self.continue_answers:
                paths = [(tuple(a[:-1]), k + 1) for k, a in enumerate(answers)]
                self._kept, group = _KeptAnswers(n_prompt, paths, len(trie)), []
        finally:
            for k in range(len(group)):
                self._ctx.kv_cache_seq_rm(k + 1, -1, -1)

    # -- generation -----------------------------------------------------------------------------

    def generate(self, prompt, *, max_tokens, sampling=Sampling(), stop=()) -> Generation:
        gen = Generation(iter(()))
        gen._pieces = self._stream(list(prompt), max_tokens, sampling, tuple(stop), gen)
        return gen

    def _stream(self, prompt, max_tokens, sampling, stop, gen: Generation) -> Iterator[str]:
        gen.prompt_tokens = len(prompt)
        gen.reused_tokens = self._ingest(prompt, extra=max_tokens)
        yield from self._answer(max_tokens, sampling, stop, gen)

    def _append(self, token: int) -> None:
        position = len(self._cached)
        self._cached.append(token)
        try:
            self._fill_batch([(0, position, [token])], logits="last")
            self._run_batch()
        except BaseException:
            self._forget()
            raise

    # -- timings ---------------------------------------------------------------------------------

    def perf(self) -> dict:
        """llama.cpp's own timings since the last reset (for the engine-overhead benchmark)."""
        data = llama_cpp.llama_perf_context(self._ctx.ctx)
        return {
            "prompt_ms": data.t_p_eval_ms,
            "prompt_tokens": data.n_p_eval,
            "gen_ms": data.t_eval_ms,
            "gen_tokens": data.n_eval,
        }

    def reset_perf(self) -> None:
        llama_cpp.llama_perf_context_reset(self._ctx.ctx)


def _put(batch, n: int, token: int, pos: int, seq: int | Sequence[int], logits: bool) -> None:
    batch.token[n] = token
    batch.pos[n] = pos
    if isinstance(seq, int):
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq
    else:
        batch.n_seq_id[n] = len(seq)
        for k, s in enumerate(seq):
            batch.seq_id[n][k] = s
    batch.logits[n] = logits
