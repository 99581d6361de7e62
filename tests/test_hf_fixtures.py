"""The rebuilt SmolLM2 Hugging Face checkpoint is what other tests take it for: a working LlamaForCausalLM whose
tokenizer is the one llama.cpp runs from the original GGUF file (transformers is the independent reader here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_vocab import imhi_texts, llama_tokenize


@pytest.fixture(scope="module")
def original(smollm2_gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(smollm2_gguf), n_ctx=512, n_threads=2, logits_all=True, verbose=False)


def test_hf_fixture_tokenizer_equals_llama_cpp_on_the_original(smollm2_hf_checkpoint, original, imhi_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_checkpoint)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    texts = imhi_texts(imhi_dir)
    wrong = [t for t in texts if tokenizer.encode(t, add_special_tokens=True) != llama_tokenize(original, t)]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, first: {wrong[0][:200]!r}"
    chat = [{"role": "user", "content": "How are you?"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_hf_fixture_model_predicts_as_llama_cpp_on_the_original(smollm2_hf_checkpoint, original, imhi_dir):
    """Transformers on the bf16 rebuild and llama.cpp on the Q4_1 file mostly agree on the next token: a wrong
    q/k un-permutation or a misnamed tensor drops this to near zero. Q4_1 itself bounds it (about 95%)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((smollm2_hf_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf_checkpoint, dtype=torch.float32).eval()
    ids = llama_tokenize(original, "\n".join(imhi_texts(imhi_dir, per_task=1)))[:256]
    with torch.no_grad():
        hf_top = model(torch.tensor([ids])).logits[0].argmax(-1).numpy()
    original.reset()
    original.eval(ids)
    cpp_top = np.asarray(original.scores[: len(ids)]).argmax(-1)
    agreement = float((hf_top == cpp_top).mean())
    print(f"top-1 agreement HF bf16 vs llama.cpp Q4_1: {agreement:.3f} over {len(ids)} positions")
    assert agreement >= 0.85, f"top-1 agreement {agreement:.3f} over {len(ids)} positions"
