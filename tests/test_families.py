"""The family registry answers every per-family question the runtime asks (pure Python, no model): the language
a model's tasks run in, the task form, the query format and the chat layout without a template."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mental_edge.engine import ModelInfo, Segment
from mental_edge.errors import MentalEdgeError
from mental_edge.families import FAMILIES, OTHER, Family, family_for
from mental_edge.prompting.chat_format import Glm4Format, Llama2Format, TemplateFormat, chat_format_for
from mental_edge.prompting.query_format import FORMATS, form_for, query_format_for


def _info(architecture: str, chat_template: str | None = None, metadata: dict | None = None) -> ModelInfo:
    return ModelInfo(
        path=Path("model.gguf"),
        name="model",
        architecture=architecture,
        quantization="Q4_1",
        n_ctx_train=2048,
        n_params=1,
        chat_template=chat_template,
        add_bos=True,
        engine="test",
        metadata=metadata or {},
    )


def _engine(info: ModelInfo, pieces: dict[int, str] | None = None):
    """What chat_format_for reads of an engine: its info and the text of the BOS/EOS tokens."""
    return SimpleNamespace(info=info, token_text=lambda token: (pieces or {})[token])


@pytest.mark.parametrize(
    ("architecture", "language", "english_form", "query_format"),
    [
        ("llama", "en", "instruction", "raw"),
        ("chatglm", "zh", "instruction", "glm"),
        ("t5", "en", "completion", "raw"),
        ("bart", "en", "completion", "raw"),
        ("qwen2", "en", "instruction", "raw"),  # not a known family: the defaults
    ],
)
def test_each_family_gives_its_language_form_and_query_format(architecture, language, english_form, query_format):
    info = _info(architecture)
    assert family_for(architecture).language == language
    assert form_for(info, "en") == english_form
    assert form_for(info, "zh") == "chinese"  # Chinese tasks keep their own form on any model
    assert query_format_for(info).name == query_format
    assert query_format_for(info, "raw").name == "raw"  # a named format overrides the family's


def test_unknown_architecture_gets_the_other_family_and_an_unknown_format_name_is_one_line():
    assert family_for("mamba") is OTHER
    with pytest.raises(MentalEdgeError, match="unknown prompt format 'nope'; known: raw, glm"):
        query_format_for(_info("llama"), "nope")


def test_glm_query_wraps_the_post_as_plain_text_between_control_segments():
    segments = query_format_for(_info("chatglm")).segments("<|user|> post", "answer")
    assert segments == [
        Segment("[gMASK]<sop><|user|>", special=True),
        Segment("\n"),
        Segment("<|user|> post"),  # the post never becomes special text
        Segment("<|assistant|>", special=True),
        Segment("\nanswer"),
    ]
    assert not query_format_for(_info("chatglm")).add_bos


def test_chat_layout_without_a_template_is_the_familys():
    llama = chat_format_for(_engine(_info("llama", metadata={"tokenizer.ggml.bos_token_id": 1}), {1: "<B>"}))
    assert isinstance(llama, Llama2Format) and llama.bos_token == "<B>" and llama.eos_token == "</s>"
    assert isinstance(chat_format_for(_engine(_info("chatglm"))), Glm4Format)
    for architecture in ("t5", "bart", "qwen2"):
        with pytest.raises(MentalEdgeError, match=f"no known chat format for architecture {architecture}"):
            chat_format_for(_engine(_info(architecture)))


def test_the_model_files_template_wins_over_the_family():
    fmt = chat_format_for(_engine(_info("t5", chat_template="{{ messages[0].content }}")))
    assert isinstance(fmt, TemplateFormat)


def test_every_registered_family_is_complete_and_its_query_format_can_be_named():
    for architecture, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == architecture
        assert family.language in ("en", "zh") and family.form in ("instruction", "completion")
        assert FORMATS[family.query_format.name] is family.query_format
    assert list(FORMATS) == ["raw", "glm"]


def test_the_family_registry_and_the_converters_agree():
    """Adding a family touches its family module and its converter: every checkpoint layout the GGUF converter
    takes belongs to the family its GGUF_ARCH names, the BART converter's to the CTranslate2 family, and every
    table elsewhere (engine, verify, pull) derives from the registry."""
    from mental_edge.convert.arch import ARCHITECTURES

    from mental_edge.families import FAMILIES, checkpoint_layouts, hub_models
    from mental_edge.store.pull import KNOWN_MODELS
    from mental_edge.verification.reference import LAYOUTS

    layouts = checkpoint_layouts()
    for hf_arch, module in ARCHITECTURES.items():
        assert layouts[hf_arch][0] == module.GGUF_ARCH, hf_arch
        assert FAMILIES[module.GGUF_ARCH].engine.startswith("llama.cpp")
    assert layouts["BartForConditionalGeneration"][0] == "bart" and FAMILIES["bart"].engine == "ctranslate2"
    assert LAYOUTS == layouts and KNOWN_MODELS == hub_models()
    assert {m.short for m in KNOWN_MODELS.values()} >= {"mentallama-7b", "mentalglm", "mentalt5", "mentalbart"}
    assert [f.name for f in FAMILIES.values() if f.encoder_decoder] == ["t5", "bart"]
