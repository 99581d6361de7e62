"""GLM-4 (MentalGLM, MentalGLM-chat): Chinese tasks by default; one query as
`[gMASK]<sop><|user|>\\n{query}<|assistant|>` and conversations in GLM-4-chat's layout."""

from __future__ import annotations

from collections.abc import Sequence

from mental_edge.engine.base import Segment
from mental_edge.families.base import ChatFormat, Family, HubModel, Message, QueryFormat, decoder_shape

GLM_QUERY = QueryFormat(
    "glm",
    (Segment("[gMASK]<sop><|user|>", special=True), Segment("\n")),
    (Segment("<|assistant|>", special=True),),
    add_bos=False,
    separator="\n",
)


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


FAMILY = Family(
    "chatglm",
    language="zh",
    form="instruction",
    query_format=GLM_QUERY,
    chat_format=lambda bos, eos: Glm4Format(),
    checkpoints={
        "GlmForCausalLM": "causal",
        "ChatGLMModel": "glm-remote",
        "ChatGLMForConditionalGeneration": "glm-remote",
    },
    hub_models=(
        HubModel("mentalglm", "zwzzz/MentalGLM", "Q4_K_M"),
        HubModel("mentalglm-chat", "zwzzz/MentalGLM-chat", "Q4_K_M"),
    ),
    file_shape=decoder_shape(("gpt2",)),  # GLM-4's byte-level BPE
)
