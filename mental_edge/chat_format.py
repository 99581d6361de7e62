"""A conversation laid out the way a chat model wants it, as prompt segments.

The model file's own chat template wins. It is untrusted code, so it runs in jinja2's immutable sandbox, and the
messages enter it as sentinels: the rendered template text becomes special segments (its control tokens are
recognised) while every message's content becomes a plain segment. A user typing `<|im_end|>` or `</s>` gets those
characters as text, never the control token. Without a template, the known format of the family: Llama-2's
`[INST]` (MentaLLaMA-chat, architecture llama) or GLM-4's (architecture chatglm).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mental_edge.engine import Engine, PromptText, Segment, Seq2SeqPrompt
from mental_edge.errors import MentalEdgeError

_HOLDER = re.compile("\ue000(\\d+)\ue001")  # private-use characters: never in a template's own text


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


def _raise(message):
    raise jinja2.TemplateError(str(message))


def _environment() -> ImmutableSandboxedEnvironment:
    """The environment Hugging Face renders chat templates in, sandboxed."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class TemplateFormat(ChatFormat):
    """The model file's own `tokenizer.chat_template`."""

    name = "template"

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", model: str = "model"):
        self.model = model
        self.bos_token, self.eos_token = bos_token, eos_token
        try:
            self.template = _environment().from_string(source)
        except jinja2.TemplateError as exc:
            raise MentalEdgeError(f"{model}: its chat template does not parse ({exc})") from None

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        try:
            text = self._render(messages)
        except Exception as first:  # noqa: BLE001 - a template may fail in any way; retry without a system role
            if not messages or messages[0].role != "system" or len(messages) < 2:
                raise MentalEdgeError(f"{self.model}: its chat template failed ({first})") from None
            messages = _fold_system(messages)
            try:
                text = self._render(messages)
            except Exception as exc:  # noqa: BLE001
                raise MentalEdgeError(f"{self.model}: its chat template failed ({exc})") from None
        return _split_holders(text, messages)

    def _render(self, messages: Sequence[Message]) -> str:
        held = [{"role": m.role, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        return self.template.render(
            messages=held, add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token
        )


def _fold_system(messages: Sequence[Message]) -> list[Message]:
    """For templates that refuse a system role: the system text opens the first user message."""
    system, first, *rest = messages
    return [Message(first.role, f"{system.content}\n\n{first.content}"), *rest]


def _split_holders(text: str, messages: Sequence[Message]) -> list[Segment]:
    """Template text as special segments, each sentinel replaced by its message's content as plain text."""
    out = []
    for i, part in enumerate(_HOLDER.split(text)):
        if i % 2:
            out.append(Segment(messages[int(part)].content))
        elif part:
            out.append(Segment(part, special=True))
    return out


class Llama2Format(ChatFormat):
    """Meta's Llama-2-chat layout (as in its reference `chat_completion`): every exchange is
    `<s>[INST] {user} [/INST] {answer} </s>`, the system prompt inside the first `[INST]` between
    `<<SYS>>` markers; contents stripped. One BOS per exchange, written here, so exactly one at the start."""

    name = "llama-2"
    stop = ("[INST]",)

    def __init__(self, bos_token: str = "<s>", eos_token: str = "</s>"):
        self.bos_token, self.eos_token = bos_token, eos_token

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        system = messages[0].content.strip() if messages and messages[0].role == "system" else None
        out: list[Segment] = []
        for m in messages[1:] if system is not None else messages:
            text = m.content.strip()
            if m.role == "user":
                out.append(Segment(f"{self.bos_token}[INST] ", special=True))
                if system is not None:
                    out += [
                        Segment("<<SYS>>\n", special=True),
                        Segment(system),
                        Segment("\n<</SYS>>\n\n", special=True),
                    ]
                    system = None
                out += [Segment(text), Segment(" [/INST]", special=True)]
            elif m.role == "assistant":
                out += [Segment(" "), Segment(text), Segment(f" {self.eos_token}", special=True)]
        return out


class Glm4Format(ChatFormat):
    """GLM-4-chat: `[gMASK]<sop><|system|>\\n...<|user|>\\n...<|assistant|>` (the prefix is the model's BOS)."""

    name = "glm-4"
    add_bos = False  # `[gMASK]<sop>` is written here

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        out = [Segment("[gMASK]<sop>", special=True)]
        for m in messages:
            out += [Segment(f"<|{m.role}|>", special=True), Segment("\n"), Segment(m.content)]
        out.append(Segment("<|assistant|>", special=True))
        return out


def chat_format_for(engine: Engine) -> ChatFormat:
    """The model file's template where it has one, else its family's known format."""
    info = engine.info
    bos, eos = _special_text(engine, "bos"), _special_text(engine, "eos")
    if info.chat_template:
        return TemplateFormat(info.chat_template, bos_token=bos, eos_token=eos, model=info.name)
    if info.architecture == "llama":
        return Llama2Format(bos or "<s>", eos or "</s>")
    if info.architecture == "chatglm":
        return Glm4Format()
    raise MentalEdgeError(
        f"{info.name}: no chat template in the model file and no known chat format for architecture {info.architecture}"
    )


def _special_text(engine: Engine, which: str) -> str:
    token = engine.info.metadata.get(f"tokenizer.ggml.{which}_token_id")
    if token is None:
        return ""
    try:
        return engine.token_text(int(token))
    except (NotImplementedError, ValueError):
        return ""
