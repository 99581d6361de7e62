"""The CTranslate2 backend for BART (MentalBART) model folders written by `convert.bart_ct2`.

The prompt is the encoder's input, `<s> ... </s>` added here (CTranslate2 adds nothing); the decoder starts
from the folder's decoder start token (`</s>` for BART) followed by `<s>`, as BART was fine-tuned, so a
continuation means the answer tokens after that `<s>`. Decoding is plain greedy at temperature 0 (beam size 1,
top-k 1), whatever generation defaults the original checkpoint carried. Tokenization is BART's byte-level BPE
through the `tokenizers` package; text in a post never becomes a special token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mental_edge.engine.base import Engine, Generation, ModelInfo, Sampling, Segment, Seq2SeqPrompt
from mental_edge.engine.text import StopText
from mental_edge.errors import MentalEdgeError

INFO_FILE = "mental_edge.json"
MISSING_CT2 = "CTranslate2 is not installed; BART models need it: pip install 'mental-edge[bart]'"


def _import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise MentalEdgeError(MISSING_CT2) from None
    return ctranslate2


class CT2Engine(Engine):
    encoder_decoder = True
    features = frozenset({"prompt_logits"})

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        gpu_layers: int | None = None,
        name: str | None = None,
    ):
        ct2 = _import_ctranslate2()
        from tokenizers import Tokenizer

        folder = Path(path)
        meta = _read_info(folder)
        device = "cuda" if gpu_layers != 0 and ct2.get_cuda_device_count() > 0 else "cpu"
        try:
            self._translator = ct2.Translator(str(folder), device=device, intra_threads=threads or 0)
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # both libraries raise plain RuntimeError/Exception with their own text
            raise MentalEdgeError(f"{folder}: CTranslate2 could not load this model ({exc})") from None
        self._ct2 = ct2
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self._bos, self._eos = config.get("bos_token", "<s>"), config.get("eos_token", "</s>")
        self._eos_id = self._tokenizer.token_to_id(self._eos)
        n_ctx_train = int(meta.get("n_ctx", 1024))
        self.n_ctx = min(n_ctx or n_ctx_train, n_ctx_train)
        self.info = ModelInfo(
            path=folder / "model.bin",
            name=name or meta.get("name") or folder.name,
            architecture="bart",
            quantization=str(meta.get("weights", "unknown")).upper(),
            n_ctx_train=n_ctx_train,
            n_params=int(meta.get("n_params", 0)),
            chat_template=None,
            add_bos=True,
            engine=f"CTranslate2 {ct2.__version__}",
            metadata=meta,
        )
        self.settings = {
            "n_ctx": self.n_ctx,
            "threads": threads or 0,
            "device": device,
            "compute_type": self._translator.compute_type,
        }

    # -- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        self._tokenizer.encode_special_tokens = not special  # "</s>" typed in a post stays text
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids if text else []
        if add_bos:
            return [self._tokenizer.token_to_id(self._bos), *ids, self._eos_id]
        return ids

    def frame(self, tokens: list[int]) -> list[int]:
        """BART's encoder reads `<s> ... </s>`."""
        return [self._tokenizer.token_to_id(self._bos), *tokens, self._eos_id]

    def tokenize_segments(self, segments: Sequence[Segment], *, add_bos: bool = False) -> list[int]:
        """Plain runs are tokenized as one text, special segments with special tokens recognised; with
        `add_bos` the encoder's `<s> ... </s>` frame is added."""
        tokens: list[int] = []
        run = ""
        for seg in segments:
            if not seg.special:
                run += seg.text
                continue
            tokens += self.tokenize(run) + self.tokenize(seg.text, special=True)
            run = ""
        tokens += self.tokenize(run)
        return self.frame(tokens) if add_bos else tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens), skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        return self._tokenizer.id_to_token(token) or ""

    def is_end(self, token: int) -> bool:
        return token == self._eos_id

    def _pieces(self, tokens: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(t) for t in tokens]

    def _source(self, prompt: Sequence[int]) -> list[str]:
        if not prompt:
            raise MentalEdgeError("empty prompt: nothing to encode")
        if len(prompt) > self.n_ctx:
            raise MentalEdgeError(f"the prompt has {len(prompt)} tokens; the encoder reads at most {self.n_ctx}")
        return self._pieces(prompt)

    # -- scoring and generation -------------------------------------------------------------------

    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """log P(continuation | prompt) over the answer tokens after the decoder's `<s>` (CTranslate2 also
        scores `<s>` and a closing `</s>`: both are left out)."""
        source = self._source(prompt)
        longest = max((len(c) for c in continuations), default=0)
        if longest + 2 > self.n_ctx:
            raise MentalEdgeError(f"an answer of {longest} tokens does not fit the decoder's {self.n_ctx}")
        scored = [i for i, c in enumerate(continuations) if c]
        results = self._translator.score_batch(
            [source] * len(scored), [[self._bos, *self._pieces(continuations[i])] for i in scored], max_input_length=0
        )
        scores = [0.0] * len(continuations)
        for i, result in zip(scored, results):
            scores[i] = float(sum(result.log_probs[1:-1]))
        return scores

    def prompt_logits(self, prompt: Seq2SeqPrompt) -> np.ndarray:
        """Raw decoder logits after its `<s>` and after each target token (len(target) + 1 rows),
        the decoder forced through the target. For `mental-edge verify`, which compares them with a reference."""
        prefix = [self._bos, *self._pieces(prompt.target)]
        (result,) = self._translator.translate_batch(
            [self._source(prompt.source)],
            target_prefix=[prefix],
            beam_size=1,
            max_decoding_length=len(prefix) + 1,
            min_decoding_length=0,  # else the first step's end token is masked out of the logits
            return_logits_vocab=True,
            max_input_length=0,
        )
        rows = np.stack([np.asarray(step, dtype=np.float32) for step in result.logits[0]])
        return rows[1 : len(prefix) + 1]  # rows[0] predicts the `<s>` itself

    def generate(self, prompt, *, max_tokens, sampling=Sampling(), stop=()) -> Generation:
        """`prompt`: encoder tokens, or a Seq2SeqPrompt whose target the decoder continues."""
        source, target = (prompt.source, prompt.target) if isinstance(prompt, Seq2SeqPrompt) else (prompt, ())
        gen = Generation(iter(()))
        gen._pieces = self._stream(list(source), list(target), max_tokens, sampling, tuple(stop), gen)
        return gen

    def _options(self, sampling: Sampling) -> dict:
        """CTranslate2 seeds a worker thread's generator once, at its first sampled token: the seed of an
        engine's first sampled request decides the stream of all its later ones."""
        if sampling.greedy:
            return {"sampling_topk": 1}
        self._ct2.set_random_seed(sampling.seed)
        return {
            "sampling_topk": sampling.top_k or 0,
            "sampling_topp": sampling.top_p,
            "sampling_temperature": sampling.temperature,
        }

    def _stream(self, source, target, max_tokens, sampling, stop, gen: Generation) -> Iterator[str]:
        gen.prompt_tokens = len(source)
        prefix = [self._bos, *self._pieces(target)]
        length = min(len(prefix) + max_tokens, self.n_ctx)
        steps = self._translator.generate_tokens(
            self._source(source),
            target_prefix=prefix,
            max_decoding_length=length,
            max_input_length=0,
            **self._options(sampling),
        )
        made: list[int] = []
        shown, stream = "", StopText(stop)
        gen.finish_reason = "length" if length == len(prefix) + max_tokens else "context"
        try:
            for n, step in enumerate(steps):
                if n < len(prefix):  # CTranslate2 replays the prefix first
                    continue
                if self.is_end(step.token_id):
                    gen.finish_reason = "stop"
                    break
                made.append(step.token_id)
                gen.generated_tokens += 1
                text = self.detokenize(made)
                if text.endswith("\ufffd"):  # a character split across byte-level tokens: wait for the rest
                    continue
                out = stream.feed(text[len(shown) :].encode("utf-8"))
                shown = text
                if out:
                    yield out
                if stream.stopped:
                    gen.finish_reason = "stop"
                    return
            rest = stream.flush() + self.detokenize(made)[len(shown) :]
            if rest:
                yield rest
        finally:
            steps.close()

    def close(self):
        self._translator = None


class SequenceScorer:
    """BART as a scorer: each target's mean token log-likelihood given its source, batched (BARTScore).

    As neulab/BARTScore scores: source and target tokenized by BART's tokenizer and framed `<s> ... </s>`, each
    cut to the model's positions (1,024 for bart-large; the closing `</s>` kept, as the tokenizer's truncation
    does), and the decoder run as BART's `labels` shifting runs it: from the decoder start token (`</s>`), then
    `<s>` and the target. CTranslate2's `score_batch` prepends that start token itself and returns a log-probability
    for `<s>`, each target token and the closing `</s>`: their mean is the score.
    """

    def __init__(
        self, path: str | Path, *, threads: int | None = None, compute_type: str = "default", device: str | None = None
    ):
        """`device`: "cpu" or "cuda" (default: a GPU where CTranslate2 sees one)."""
        ct2 = _import_ctranslate2()
        from tokenizers import Tokenizer

        folder = Path(path)
        meta = _read_info(folder)
        if meta.get("architecture") != "bart" or not (folder / "model.bin").is_file():
            raise MentalEdgeError(f"{folder}: not a converted BART scorer (no BART model.bin with {INFO_FILE})")
        try:
            device = device or ("cuda" if ct2.get_cuda_device_count() > 0 else "cpu")
            self._translator = ct2.Translator(
                str(folder), device=device, intra_threads=threads or 0, compute_type=compute_type
            )
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # both libraries raise plain RuntimeError/Exception with their own text
            raise MentalEdgeError(f"{folder}: CTranslate2 could not load this scorer ({exc})") from None
        self._tokenizer.encode_special_tokens = True  # "</s>" typed in an explanation stays text
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self._bos, self._eos = config.get("bos_token", "<s>"), config.get("eos_token", "</s>")
        self.max_tokens = int(meta.get("n_ctx", 1024))  # positions, frame included
        self.name = str(meta.get("name") or folder.name)
        self.info = {
            "name": self.name,
            "weights": meta.get("weights"),
            "source": meta.get("source"),
            "state_dict": meta.get("state_dict"),
            "compute_type": self._translator.compute_type,
            "device": self._translator.device,
            "engine": f"CTranslate2 {ct2.__version__}",
        }

    def pieces(self, text: str) -> list[str]:
        """The text as the model reads it: `<s>`, its tokens cut to fit, `</s>`."""
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids if text else []
        body = [self._tokenizer.id_to_token(i) for i in ids[: self.max_tokens - 2]]
        return [self._bos, *body, self._eos]

    def score(self, sources: Sequence[str], targets: Sequence[str], *, batch_size: int = 16) -> list[float]:
        """Mean log-probability per token of each target given its source (higher is better)."""
        if len(sources) != len(targets):
            raise ValueError("sources and targets differ in length")
        if not sources:
            return []
        results = self._translator.score_batch(
            [self.pieces(s) for s in sources],
            [self.pieces(t)[:-1] for t in targets],  # CTranslate2 appends the closing </s> itself
            max_batch_size=batch_size,
            max_input_length=0,
        )
        return [float(np.mean(r.log_probs)) for r in results]

    def close(self) -> None:
        self._translator = None


class SequenceClassifier:
    """A converted BERT sequence classifier (convert.bert_ct2): CTranslate2 runs the encoder and pooler, the
    linear head and softmax are numpy. Inputs as BERT's tokenizer gives them: `[CLS] ... [SEP]`, cut at 512
    tokens (the `[SEP]` kept), token type 0, as the benchmark's `tokenizer(..., truncation=True, max_length=512)`."""

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str | None = None):
        ct2 = _import_ctranslate2()
        from tokenizers import Tokenizer

        folder = Path(path)
        meta = _read_info(folder)
        if meta.get("architecture") != "bert-classifier" or not (folder / "classifier.npz").is_file():
            raise MentalEdgeError(f"{folder}: not a converted BERT classifier (no classifier.npz with {INFO_FILE})")
        try:
            device = device or ("cuda" if ct2.get_cuda_device_count() > 0 else "cpu")
            self._encoder = ct2.Encoder(str(folder), device=device, intra_threads=threads or 0)
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            with np.load(folder / "classifier.npz") as head:
                self._weight, self._bias = head["weight"], head["bias"]
        except Exception as exc:  # the libraries raise plain RuntimeError/Exception with their own text
            raise MentalEdgeError(f"{folder}: could not load this classifier ({exc})") from None
        self.num_labels = int(self._weight.shape[0])
        self.max_tokens = min(int(meta.get("n_ctx", 512)), 512)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def probabilities(self, texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
        """Each text's class probabilities, shape (len(texts), num_labels)."""
        out = np.zeros((len(texts), self.num_labels), dtype=np.float64)
        for start in range(0, len(texts), batch_size):
            ids = [self._ids(t) for t in texts[start : start + batch_size]]
            result = self._encoder.forward_batch(ids, token_type_ids=[[0] * len(i) for i in ids])
            pooled = np.array(result.pooler_output, dtype=np.float64)
            logits = pooled @ self._weight.T.astype(np.float64) + self._bias
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            out[start : start + len(ids)] = exp / exp.sum(axis=1, keepdims=True)
        return out

    def _ids(self, text: str) -> list[int]:
        ids = self._tokenizer.encode(text).ids  # [CLS] ... [SEP] from the tokenizer's post-processor
        if len(ids) > self.max_tokens:
            ids = [*ids[: self.max_tokens - 1], ids[-1]]
        return ids


def _read_info(folder: Path) -> dict:
    path = folder / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MentalEdgeError(f"{path}: not valid JSON ({exc})") from None
