"""Architectures the converter knows, keyed by config.json's `architectures[0]`.

Each module provides `GGUF_ARCH` (llama.cpp's architecture name), `add_metadata(writer, config)` and
`plan(checkpoint, outtype) -> list[OutTensor]`. Adding an architecture is one module and one line here.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import ConversionError
from . import chatglm, llama, t5

ARCHITECTURES: dict[str, ModuleType] = {
    "LlamaForCausalLM": llama,
    "ChatGLMModel": chatglm,
    "ChatGLMForConditionalGeneration": chatglm,
    "GlmForCausalLM": chatglm,
    "T5ForConditionalGeneration": t5,
}


def architecture_for(config: dict) -> ModuleType:
    archs = config.get("architectures") or []
    name = archs[0] if archs else None
    if name not in ARCHITECTURES:
        raise ConversionError(
            f"config.json: architecture {name or '(none given)'} is not supported; "
            f"supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[name]
