"""What a model family is made of: its language, the task form it answers, how it takes one query and, without
a chat template in the model file, how it lays out a conversation. The family modules fill these in."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mental_edge.engine.base import Engine, PromptText, Segment, Seq2SeqPrompt


@dataclass(frozen=True)
class QueryFormat:
    """How a model takes one query: control text around it (special segments, never the query itself)."""

    name: str
    before: tuple[Segment, ...]
    after: tuple[Segment, ...]
    add_bos: bool  # add BOS where the model file asks for it
    separator: str  # between the wrapped query and an answer the model is scored on or continues

    def segments(self, query: str, answer: str | None = None) -> list[Segment]:
        """The prompt for `query`, followed by `answer` when the answer is being scored or continued."""
        parts = [*self.before, Segment(query), *self.after]
        if answer is not None:
            parts.append(Segment(self.separator + answer))
        return parts


RAW = QueryFormat("raw", (), (), add_bos=True, separator=" ")  # the query as it is, after BOS


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


class ChatFormat:
    """Renders messages, ending with the assistant's turn opened, as segments for `Engine.tokenize_segments`."""

    name = "chat"
    add_bos = True  # let the engine add BOS where the model file asks for it (never a second one)
    stop: tuple[str, ...] = ()

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        raise NotImplementedError

    def tokens(self, engine: Engine, messages: Sequence[Message]) -> list[int] | Seq2SeqPrompt:
        return engine.encode(PromptText(tuple(self.segments(messages)), frame=self.add_bos))


@dataclass(frozen=True)
class HubModel:
    """A model `pull` knows by a short name: its hub repo and how it is converted by default."""

    short: str
    repo: str
    quant: str | None  # the default --quant
    outtype: str = "f16"
    folder: bool = False  # converted to a CTranslate2 folder, not a GGUF file


@dataclass(frozen=True)
class FileShape:
    """What a family's GGUF file must hold, checked by engine/file_check.py before llama.cpp reads it (keys are
    named after "<architecture>."): `blocks`, each block-count key with the tensor-name prefix of the blocks it
    counts; `required`, the hyperparameters its loader reads; `dims`, a key with the tensor and dimension (ggml
    order: 0 is the row length) that must equal it; `tokenizers`, the tokenizer models (`tokenizer.ggml.model`)
    its files use."""

    blocks: Mapping[str, str]
    required: tuple[str, ...]
    dims: Mapping[str, tuple[str, int]]
    tokenizers: tuple[str, ...]


def decoder_shape(tokenizers: tuple[str, ...]) -> FileShape:
    """The shape of a decoder-only llama.cpp file (LLaMA, GLM-4): blocks `blk.N`, the embedding's width and rows
    as the width and vocabulary, the first block's ffn_down as the feed-forward width."""
    return FileShape(
        blocks={"block_count": "blk."},
        required=("context_length", "embedding_length", "feed_forward_length", "attention.head_count"),
        dims={
            "embedding_length": ("token_embd.weight", 0),
            "vocab_size": ("token_embd.weight", 1),
            "feed_forward_length": ("blk.0.ffn_down.weight", 0),
        },
        tokenizers=tokenizers,
    )


@dataclass(frozen=True)
class Family:
    """Everything the package knows of a model family, so that no other module keeps a table of families.

    `name` is the model file's architecture (GGUF `general.architecture`; "bart" for a CTranslate2 folder).
    Runtime defaults: `language` of the tasks it runs by default ("en", "zh"), the task `form` it was trained on
    for English tasks, its `query_format` (a run's --prompt-format overrides it) and `chat_format`, made from the
    model's BOS and EOS text, for a model file without a chat template (None: it has none).
    What the rest needs: `engine`, the backend that runs its files ("llama.cpp", "llama.cpp-t5" through the
    encoder-decoder API, "ctranslate2"); `checkpoints`, the Hugging Face `architectures[0]` it converts from, each
    with how `verify` loads that checkpoint in transformers ("causal", "glm-remote", "seq2seq", "bart"); the
    converter itself is convert/arch/ (GGUF) or convert/bart_ct2.py, which never import the runtime; `hub_models`,
    the short names `pull` knows; `file_shape`, what its GGUF files must hold (None: not a GGUF family)."""

    name: str
    language: str
    form: str
    query_format: QueryFormat = RAW
    chat_format: Callable[[str, str], ChatFormat] | None = None
    engine: str = "llama.cpp"
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    hub_models: tuple[HubModel, ...] = ()
    file_shape: FileShape | None = None

    @property
    def encoder_decoder(self) -> bool:
        return self.engine != "llama.cpp"
