"""The llama.cpp backend for encoder-decoder GGUF models (T5, MentalT5), through llama-cpp-python's low-level API.

llama-cpp-python's high-level `Llama` never runs the encoder. Here a request is: the prompt goes through
`llama_encode` (its output stays in the context for the decoder's cross-attention), then the decoder starts
from the model's decoder start token, its cache cleared first. `prompt` means encoder input throughout this
engine and a continuation means decoder tokens: `score` gives log P(decoder tokens | encoder input), and
`generate` takes an optional `Seq2SeqPrompt` whose target the decoder reads before generating.

Continuations are scored side by side as separate decoder sequences: every encoder token carries all the
sequence ids, so each decoder sequence attends to the one encoder output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals

from mental_edge.engine.base import Generation, Sampling, Seq2SeqPrompt
from mental_edge.engine.llamacpp.common import (
    ContextOverflow,
    LlamaCppEngine,
    check_gguf,
    default_gpu_layers,
    default_threads,
    log_softmax,
    model_info,
)
from mental_edge.engine.sizing import available_memory, cache_bytes_per_token, seq2seq_context
from mental_edge.errors import MentalEdgeError

SCORE_SEQS = 8  # decoder sequences scored in one batch


class LlamaT5Engine(LlamaCppEngine):
    """Tokens, pieces and sampling as every llama.cpp engine (llamacpp/common.py); evaluation through the encoder and a
    fresh decoder, one request at a time."""

    encoder_decoder = True

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        gpu_layers: int | None = None,
        name: str | None = None,
    ):
        path = Path(path)
        check_gguf(path)
        threads = threads or default_threads()
        gpu_layers = default_gpu_layers() if gpu_layers is None else gpu_layers
        self._model = self._load_model(path, gpu_layers)
        if not llama_cpp.llama_model_has_encoder(self._model.model):
            raise MentalEdgeError(f"{path}: this model has no encoder (open it with the decoder-only engine)")
        self.n_ctx = seq2seq_context(  # the encoder's input limit and the decoder's length limit (engine/sizing.py)
            requested=n_ctx,
            n_ctx_train=self._model.n_ctx_train(),
            per_token=cache_bytes_per_token(self._model.metadata()),
            available=available_memory(gpu_layers != 0),
        )
        self.n_batch = self.n_ctx  # llama_encode takes the whole input in one micro-batch
        self._ctx = self._context(threads)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=SCORE_SEQS, verbose=False)
        self._n_vocab = self._model.n_vocab()
        self._start = llama_cpp.llama_model_decoder_start_token(self._model.model)
        self._encoded: list[int] | None = None  # the encoder input whose output the context holds
        self._control_re = None
        self.info = model_info(path, name, self._model, add_bos=False)
        self.settings = {"n_ctx": self.n_ctx, "threads": threads, "gpu_layers": gpu_layers}

    def _context(self, threads: int):
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_threads = params.n_threads_batch = threads
        params.n_seq_max = SCORE_SEQS
        params.kv_unified = True
        return _internals.LlamaContext(model=self._model, params=params, verbose=False)

    # -- tokens ---------------------------------------------------------------------------------

    def frame(self, tokens: list[int]) -> list[int]:
        """T5's encoder input ends with `</s>` (add_eos in the file) and has no BOS."""
        eos = self._model.token_eos()
        if self._model.add_eos_token() and eos >= 0 and tokens[-1:] != [eos]:
            return [*tokens, eos]
        return tokens

    # -- evaluation -----------------------------------------------------------------------------

    def _encode(self, source: Sequence[int]) -> None:
        """Run the encoder on `source` for every decoder sequence, unless the context holds it already."""
        if not source:
            raise MentalEdgeError("empty prompt: nothing to encode")
        if len(source) > self.n_ctx:
            raise ContextOverflow(f"the prompt has {len(source)} tokens; the encoder reads at most {self.n_ctx}")
        if self._encoded == list(source):
            return
        self._encoded = None
        self._ctx.kv_cache_clear()  # llama.cpp checks the batch's positions against the decoder's cache
        batch = self._batch.batch
        for i, tok in enumerate(source):
            batch.token[i], batch.pos[i], batch.logits[i] = tok, i, True  # the encoder outputs every token
            batch.n_seq_id[i] = SCORE_SEQS
            for s in range(SCORE_SEQS):
                batch.seq_id[i][s] = s
        batch.n_tokens = len(source)
        self._call(self._ctx.encode)
        self._encoded = list(source)

    def _call(self, step) -> None:
        try:
            step(self._batch)
        except RuntimeError as exc:
            self._encoded = None
            self._ctx.kv_cache_clear()
            raise MentalEdgeError(f"llama.cpp could not evaluate the batch ({exc})") from None

    def _decode_parts(self, parts: list[tuple[int, list[int]]], logits: str) -> list[int]:
        """Feed each (sequence, decoder tokens from position 0) on a cleared cache; returns each part's first
        batch index. logits: "all", or "last" for the last token only."""
        self._ctx.kv_cache_clear()
        batch = self._batch.batch
        n, firsts = 0, []
        for seq, toks in parts:
            firsts.append(n)
            for j, tok in enumerate(toks):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = tok, j, 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = logits == "all"
                n += 1
        batch.logits[n - 1] = True
        batch.n_tokens = n
        self._call(self._ctx.decode)
        return firsts

    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """log P(continuation as decoder output | prompt as encoder input), the decoder started from its
        start token; an empty continuation scores 0."""
        longest = max((len(c) for c in continuations), default=0)
        if longest + 1 > self.n_ctx:
            raise ContextOverflow(f"an answer of {longest} tokens does not fit the decoder's {self.n_ctx}")
        self._encode(prompt)
        scores = [0.0] * len(continuations)
        for group in self._groups(continuations):
            parts = [(k, [self._start, *continuations[i][:-1]]) for k, i in enumerate(group)]
            firsts = self._decode_parts(parts, logits="all")
            for i, first in zip(group, firsts):
                cont = continuations[i]
                rows = log_softmax(np.stack([self._logits(first + j) for j in range(len(cont))]))
                scores[i] = float(rows[np.arange(len(cont)), list(cont)].sum())
        return scores

    def prompt_logits(self, prompt: Seq2SeqPrompt) -> np.ndarray:
        """Raw decoder logits after its start token and after each target token (len(target) + 1 rows), the
        source encoded first. For `mental-edge verify`, which compares them with a reference."""
        decoded = [self._start, *prompt.target]
        if len(decoded) > self.n_ctx:
            raise ContextOverflow(f"the target has {len(prompt.target)} tokens; the decoder holds {self.n_ctx}")
        self._encode(prompt.source)
        first = self._decode_parts([(0, decoded)], logits="all")[0]
        return np.stack([self._logits(first + j) for j in range(len(decoded))])

    def _groups(self, continuations) -> Iterator[list[int]]:
        group, size = [], 0
        for i, cont in enumerate(continuations):
            if not cont:
                continue
            if group and (size + len(cont) > self.n_batch or len(group) == SCORE_SEQS):
                yield group
                group, size = [], 0
            group.append(i)
            size += len(cont)
        if group:
            yield group

    # -- generation -----------------------------------------------------------------------------

    def generate(self, prompt, *, max_tokens, sampling=Sampling(), stop=()) -> Generation:
        """`prompt`: encoder tokens, or a Seq2SeqPrompt whose target the decoder continues."""
        source, target = (prompt.source, prompt.target) if isinstance(prompt, Seq2SeqPrompt) else (prompt, ())
        gen = Generation(iter(()))
        gen._pieces = self._stream(list(source), list(target), max_tokens, sampling, tuple(stop), gen)
        return gen

    def _stream(self, source, target, max_tokens, sampling, stop, gen: Generation) -> Iterator[str]:
        gen.prompt_tokens = len(source)
        self._encode(source)
        decoded = [self._start, *target]
        if len(decoded) >= self.n_ctx:
            raise ContextOverflow(f"the answer start has {len(target)} tokens; the decoder holds {self.n_ctx}")
        self._decode_parts([(0, decoded)], logits="last")
        self._cached, self._last = decoded, -1  # what the decoder's sequence 0 holds; its last logits
        yield from self._answer(max_tokens, sampling, stop, gen)

    def _append(self, token: int) -> None:
        batch = self._batch.batch
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, len(self._cached), 1, True
        batch.seq_id[0][0] = 0
        batch.n_tokens = 1
        self._call(self._ctx.decode)
        self._cached.append(token)
