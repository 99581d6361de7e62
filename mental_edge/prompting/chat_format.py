"""A conversation laid out the way a chat model wants it, as prompt segments.

The model file's own chat template wins. It is untrusted code, so it runs in jinja2's immutable sandbox, and the
messages enter it as sentinels: the rendered template text becomes special segments (its control tokens are
recognised) while every message's content becomes a plain segment. A user typing `<|im_end|>` or `</s>` gets those
characters as text, never the control token. Without a template, the chat format of the model's family
(families/): Llama-2's `[INST]` (MentaLLaMA-chat, architecture llama) or GLM-4's (architecture chatglm).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mental_edge.engine import Engine, Segment
from mental_edge.errors import MentalEdgeError
from mental_edge.families import ChatFormat, Message, family_for
from mental_edge.families.chatglm import Glm4Format
from mental_edge.families.llama import Llama2Format

__all__ = ["ChatFormat", "Glm4Format", "Llama2Format", "Message", "TemplateFormat", "chat_format_for"]

_HOLDER = re.compile("\ue000(\\d+)\ue001")  # private-use characters: never in a template's own text


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


def chat_format_for(engine: Engine) -> ChatFormat:
    """The model file's template where it has one, else its family's known format."""
    info = engine.info
    bos, eos = _special_text(engine, "bos"), _special_text(engine, "eos")
    if info.chat_template:
        return TemplateFormat(info.chat_template, bos_token=bos, eos_token=eos, model=info.name)
    make = family_for(info.architecture).chat_format
    if make is not None:
        return make(bos, eos)
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
