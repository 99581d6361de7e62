"""What the llama.cpp engines share (decoder-only `LlamaEngine`, encoder-decoder `LlamaT5Engine`): loading a GGUF
file, its vocabulary (tokens, control tokens, pieces), the sampler and the sampling loop.

`LlamaCppEngine` is their base. A subclass's constructor sets `_model` (from `_load_model`), `_ctx`, `_n_vocab`,
`_control_re = None`, `n_ctx` and `info`, and implements `_append(token)`: feed one sampled token to sequence 0 and
leave its logits at `_last`, the tokens sequence 0 holds in `_cached`.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals, _logger

from mental_edge.engine.base import Engine, Generation, ModelInfo, Sampling, Segment, TokenLogprob
from mental_edge.engine.text import StopText
from mental_edge.errors import MentalEdgeError

_logger.set_verbose(False)  # llama.cpp's own chatter goes nowhere unless asked

FILE_TYPES = {
    value: name[len("LLAMA_FTYPE_MOSTLY_") :]
    for name, value in vars(llama_cpp).items()
    if name.startswith("LLAMA_FTYPE_MOSTLY_") and isinstance(value, int)
}
FILE_TYPES[0] = "F32"


class ContextOverflow(MentalEdgeError):
    """The tokens do not fit in the context window."""


def check_gguf(path: Path) -> None:
    """One line instead of a crash for a missing or non-GGUF file."""
    if not path.is_file():
        raise MentalEdgeError(f"{path}: no such model file")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise MentalEdgeError(f"{path}: not a GGUF model file (bad magic bytes)")


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def default_gpu_layers() -> int:
    """Every layer on the GPU when this llama.cpp build has a GPU backend, none otherwise."""
    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def _cpu_repacks(gpu_layers: int) -> bool:
    """True when the weights stay on a CPU whose llama.cpp build repacks them (REPACK: Q4_0, Q4_K, IQ4_NL, ...
    copied into interleaved buffers at load). A memory-mapped file is then read once to be copied and its pages
    stay resident too: a 7B Q4_K_M took 8.0 GiB instead of 4.8 GiB. Loading without mmap keeps one copy."""
    return gpu_layers == 0 and "REPACK = 1" in llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def model_info(path: Path, name: str | None, model, add_bos: bool) -> ModelInfo:
    """What a loaded GGUF file is, as recorded with every result."""
    meta = model.metadata()
    return ModelInfo(
        path=path,
        name=name or meta.get("general.name") or path.stem,
        architecture=meta.get("general.architecture", "unknown"),
        quantization=FILE_TYPES.get(int(meta.get("general.file_type", -1)), "unknown"),
        n_ctx_train=model.n_ctx_train(),
        n_params=model.n_params(),
        chat_template=meta.get("tokenizer.chat_template"),
        add_bos=add_bos,
        engine=f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        metadata=meta,
    )


NO_TOKEN = -1  # llama.cpp's LLAMA_TOKEN_NULL


class TokenSampler:
    """llama.cpp's sampler chain for one generation, reading the logits of the engine's context: the penalties
    (over the `penalty_window` last generated tokens), then greedy or top-k/top-p/dist. `llama_sampler_sample`
    feeds each chosen token back to every stage (the penalties' counts).

    A grammar stage runs before the chain, kept apart from it: llama.cpp aborts the process when a grammar
    allows no token at all (a client's schema asking for a character no token writes), so its verdict is checked
    here first, and the chosen token is fed to both."""

    def __init__(self, ctx, sampling: Sampling, model=None, penalty_window: int = 0):
        self._ctx = ctx
        self._grammar = None
        self._sampler = sampler = _internals.LlamaSampler()
        if sampling.frequency_penalty or sampling.presence_penalty:
            freq, present = sampling.frequency_penalty, sampling.presence_penalty
            sampler.add_penalties(model.n_vocab(), penalty_window, 1.0, freq, present)
        if sampling.greedy:
            sampler.add_greedy()
        else:
            if sampling.top_k > 0:
                sampler.add_top_k(sampling.top_k)
            if sampling.top_p < 1.0:
                sampler.add_top_p(sampling.top_p, 1)
            sampler.add_temp(sampling.temperature)
            sampler.add_dist(sampling.seed)
        if sampling.grammar is not None:
            self._grammar = llama_cpp.llama_sampler_init_grammar(model.vocab, sampling.grammar.encode(), b"root")
            if not self._grammar:
                sampler.close()
                raise MentalEdgeError("llama.cpp could not parse the output grammar")
            self._candidates = np.zeros(model.n_vocab(), dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

    def sample(self, index: int) -> int:
        """The next token from the logits at batch index `index` (-1: the last computed); NO_TOKEN when the
        grammar allows none (the generation then ends with finish_reason "grammar")."""
        if self._grammar is None:
            return self._sampler.sample(self._ctx, index)
        cands = self._candidates
        cands["id"] = np.arange(len(cands))
        cands["logit"] = np.ctypeslib.as_array(self._ctx.get_logits_ith(index), shape=(len(cands),))
        cands["p"] = 0
        data = cands.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        array = llama_cpp.llama_token_data_array(data=data, size=len(cands), selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(array))
        if not np.isfinite(np.ctypeslib.as_array(array.data, shape=(array.size,))["logit"]).any():
            return NO_TOKEN
        llama_cpp.llama_sampler_apply(self._sampler.sampler, ctypes.byref(array))
        token = int(array.data[array.selected].id)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._sampler.sampler, token)
        return token

    def close(self) -> None:
        self._sampler.close()
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


class LlamaCppEngine(Engine):
    """The vocabulary, sampling and generation loop of a llama.cpp engine (see the module doc)."""

    features = frozenset({"logprobs", "grammar", "penalties", "prompt_logits"})

    _cached: list[int]
    _last: int

    @staticmethod
    def _load_model(path: Path, gpu_layers: int):
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        if _cpu_repacks(gpu_layers):
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # read, not memory-mapped
        try:
            return _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError:
            raise MentalEdgeError(
                f"{path}: llama.cpp could not load this model (truncated or corrupt file, "
                "or an architecture this llama.cpp build does not know)"
            ) from None

    # -- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        if not text:
            return [self._model.token_bos()] if add_bos else []
        return self._model.tokenize(text.encode("utf-8"), add_bos, special)

    def frame(self, tokens: list[int]) -> list[int]:
        """BOS first where the model file asks for it (never a second one)."""
        bos = self._model.token_bos()
        if self.info.add_bos and bos >= 0 and tokens[:1] != [bos]:
            return [bos, *tokens]
        return tokens

    def tokenize_segments(self, segments: Sequence[Segment], *, add_bos: bool = False) -> list[int]:
        """Tokens as llama.cpp would give for the joined text with special-token parsing on, except that
        control tokens are recognised only inside special segments: plain text around them is joined
        and tokenized as one run, so a post reads the same wherever it sits."""
        tokens: list[int] = []
        run = ""
        for piece, control_id in self._split_controls(segments):
            if control_id is None:
                run += piece
                continue
            tokens += self.tokenize(run)
            run = ""
            tokens.append(control_id)
        tokens += self.tokenize(run)
        return self.frame(tokens) if add_bos else tokens

    def _split_controls(self, segments: Sequence[Segment]) -> Iterator[tuple[str, int | None]]:
        for seg in segments:
            if not seg.special:
                yield seg.text, None
                continue
            pos = 0
            for match in self._control_pattern().finditer(seg.text):
                yield seg.text[pos : match.start()], None
                yield match.group(), self._control_ids[match.group()]
                pos = match.end()
            yield seg.text[pos:], None

    def _control_pattern(self) -> re.Pattern:
        if self._control_re is None:
            vocab = self._model.vocab
            wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            self._control_ids = {}
            for tok in range(self._n_vocab):
                if llama_cpp.llama_vocab_get_attr(vocab, tok) & wanted:
                    text = llama_cpp.llama_vocab_get_text(vocab, tok).decode("utf-8", "replace")
                    if text:
                        self._control_ids.setdefault(text, tok)
            names = sorted(self._control_ids, key=len, reverse=True)
            self._control_re = re.compile("|".join(map(re.escape, names)) or r"(?!)")
        return self._control_re

    def token_bytes(self, token: int) -> bytes:
        """The bytes a generated token stands for (control tokens: none)."""
        buf = (ctypes.c_char * 256)()
        n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, 256, 0, False)
        return bytes(buf[: max(n, 0)])

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def token_text(self, token: int) -> str:
        if not 0 <= token < self._n_vocab:
            return ""
        return llama_cpp.llama_vocab_get_text(self._model.vocab, token).decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

    # -- logits and sampling --------------------------------------------------------------------

    def _logits(self, index: int) -> np.ndarray:
        ptr = self._ctx.get_logits_ith(index)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float32)

    def log_probs(self, index: int) -> np.ndarray:
        """Log-probabilities of the next token after the last decoded batch's row `index` (-1: its last row)."""
        return log_softmax(self._logits(index))

    def new_sampler(self, sampling: Sampling) -> TokenSampler:
        """A sampler over this engine's logits; the caller closes it."""
        return TokenSampler(self._ctx, sampling, self._model, penalty_window=self.n_ctx)

    def token_logprob(self, index: int, token: int, top: int) -> TokenLogprob:
        """`token`'s log-probability after batch row `index` (the model's own, as `log_probs` gives it) and the
        `top` most likely tokens there, most likely first. Read before the row's logits are overwritten."""
        lp = self.log_probs(index)
        best = np.argpartition(-lp, top - 1)[:top] if 0 < top < len(lp) else np.arange(len(lp) if top else 0)
        best = best[np.argsort(-lp[best], kind="stable")]
        return TokenLogprob(token, float(lp[token]), tuple((int(t), float(lp[t])) for t in best))

    def _answer(self, max_tokens, sampling, stop, gen: Generation) -> Iterator[str]:
        """Sample after the tokens sequence 0 holds (`_cached`, the last one's logits at `_last`), feeding each
        sampled token back through `_append`, until max_tokens, an end token, a stop string or a full context."""
        sampler = self.new_sampler(sampling)
        text = StopText(stop)
        gen.finish_reason = "length"
        try:
            for _ in range(max_tokens):
                if len(self._cached) >= self.n_ctx:
                    gen.finish_reason = "context"
                    break
                token = sampler.sample(self._last)
                if token == NO_TOKEN:
                    gen.finish_reason = "grammar"
                    break
                if self.is_end(token):
                    gen.finish_reason = "stop"
                    break
                if sampling.logprobs is not None:  # before _append overwrites the logits
                    gen.logprobs.append(self.token_logprob(self._last, token, sampling.logprobs))
                self._append(token)
                gen.generated_tokens += 1
                out = text.feed(self.token_bytes(token))
                if out:
                    yield out
                if text.stopped:
                    gen.finish_reason = "stop"
                    return
            rest = text.flush()
            if rest:
                yield rest
        finally:
            sampler.close()

    def _append(self, token: int) -> None:
        raise NotImplementedError

    def close(self):
        self._batch.close()
        self._ctx.close()
        self._model.close()


def system_info() -> dict:
    """What this llama.cpp build can do (for `mental-edge doctor`)."""
    return {
        "version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "default_gpu_layers": default_gpu_layers(),
        "default_threads": default_threads(),
    }
