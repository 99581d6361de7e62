"""LLaMA and its kin (MentaLLaMA, SmolLM2): English, the instruction form on the raw query after BOS (as
MentaLLaMA was evaluated, no [INST] wrapper); chat without a template in Meta's Llama-2-chat layout."""

from __future__ import annotations

from collections.abc import Sequence

from mental_edge.engine.base import Segment
from mental_edge.families.base import RAW, ChatFormat, Family, HubModel, Message, decoder_shape


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


FAMILY = Family(
    "llama",
    language="en",
    form="instruction",
    query_format=RAW,
    chat_format=lambda bos, eos: Llama2Format(bos or "<s>", eos or "</s>"),
    checkpoints={"LlamaForCausalLM": "causal", "MistralForCausalLM": "causal"},
    hub_models=(
        HubModel("mentallama-7b", "klyang/MentaLLaMA-chat-7B", "Q4_K_M"),
        HubModel("mentallama-13b", "klyang/MentaLLaMA-chat-13B", "Q4_K_M"),
    ),
    file_shape=decoder_shape(("llama", "gpt2")),  # SentencePiece (Llama-2), byte-level BPE (SmolLM2, Llama-3)
)
