"""Real weights: SmolLM2 rebuilt as a bf16 Hugging Face checkpoint, converted back by `mental-edge convert`,
must compute what transformers computes on the same checkpoint (float32) over IMHI prompts.

Tolerance: bf16 weights are exact in f16, so the converted weights equal the checkpoint's; what remains is
llama.cpp's arithmetic: on CPU each f16 matmul rounds its input activations to f16 (relative error 2^-11)
across 30 layers. llama.cpp's own converter, on this same rebuild, lands within 0.02 of transformers on the
top logits (field notes); we measure 0.016-0.024 over the first eight DR prompts and allow 0.05, about 0.3%
of the top logits' size here, far below what a wrong permutation, norm, epsilon or rope base does (whole units).

Top-1 can only differ where the reference's two best logits are closer than that noise: over the first eight
DR prompts (1,700 positions) that happened twice, at reference margins of 0.0007 and 0.0009. The prompts
here (the first three under MAX_CHARS, 460 positions) have no such tie, so every position must agree.
"""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from mental_edge.cli import main

TOL = 0.05
N_PROMPTS = 3
MAX_CHARS = 1500


@pytest.fixture(scope="module")
def converted_f16(smollm2_hf_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "smollm2-f16.gguf"
    result = CliRunner().invoke(main, ["convert", str(smollm2_hf_checkpoint), "-o", str(out), "--outtype", "f16"])
    assert result.exit_code == 0, result.output
    assert "[272/272]" in result.output  # progress per tensor (stderr is mixed in by CliRunner)
    return out


@pytest.fixture(scope="module")
def prompts(imhi_dir):
    """The first N_PROMPTS DR prompts of at most MAX_CHARS characters (longer ones only cost time)."""
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fp:
        queries = [row["query"] for row in csv.DictReader(fp) if len(row["query"]) <= MAX_CHARS]
    return queries[:N_PROMPTS]


def llama_logits(gguf_path, token_lists):
    """llama.cpp's logits at every position of each token list (one model load)."""
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False, seed=0)
    try:
        out = []
        for tokens in token_lists:
            llm.reset()
            llm.eval(tokens)
            out.append(np.array(llm.scores[: len(tokens)], dtype=np.float32))
        return out
    finally:
        llm.close()


@pytest.fixture(scope="module")
def reference(smollm2_hf_checkpoint, prompts):
    """Token ids from the checkpoint's own tokenizer.json, and transformers' float32 logits on them."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tok = Tokenizer.from_file(str(smollm2_hf_checkpoint / "tokenizer.json"))
    ids = [tok.encode(p, add_special_tokens=False).ids for p in prompts]
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf_checkpoint, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = [model(torch.tensor([x])).logits[0].numpy() for x in ids]
    return ids, logits


def agreement(ref_logits, test_logits):
    """(positions with the same top-1, total positions, worst |difference| on the reference's top-5 logits)."""
    same = total = 0
    worst = 0.0
    for ref, got in zip(ref_logits, test_logits):
        same += int(np.sum(ref.argmax(-1) == got.argmax(-1)))
        total += len(ref)
        top = np.argsort(ref, axis=-1)[:, -5:]
        worst = max(worst, float(np.max(np.abs(np.take_along_axis(ref, top, -1) - np.take_along_axis(got, top, -1)))))
    return same, total, worst


def test_converted_f16_matches_transformers_on_imhi_prompts(converted_f16, reference, smollm2_gguf, prompts):
    from llama_cpp import Llama

    ids, ref_logits = reference
    llm = Llama(str(converted_f16), n_ctx=1024, vocab_only=True, verbose=False)
    assert [llm.tokenize(p.encode(), add_bos=False, special=False) for p in prompts] == ids
    llm.close()

    ours = llama_logits(converted_f16, ids)
    same, total, worst = agreement(ref_logits, ours)
    print(f"\nconverted f16 vs transformers fp32: top-1 {same}/{total}, worst top-5 logit diff {worst:.4f}")
    assert total >= 300
    assert same == total
    assert worst < TOL

    q41 = llama_logits(smollm2_gguf, ids)
    same, total, worst = agreement(ref_logits, q41)
    print(
        f"original Q4_1 file vs transformers fp32: top-1 {same}/{total} ({same / total:.1%}), "
        f"worst top-5 logit diff {worst:.3f} (reported, not asserted)"
    )


def test_quantize_q8_0_and_q4_k_m_of_the_round_tripped_model(converted_f16, tmp_path):
    from gguf import GGUFReader

    for type_name, ggml in [("Q8_0", "Q8_0"), ("Q4_K_M", "Q4_K")]:
        out = tmp_path / f"m-{type_name}.gguf"
        result = CliRunner().invoke(main, ["quantize", str(converted_f16), "-o", str(out), "--type", type_name])
        assert result.exit_code == 0, result.output
        reader = GGUFReader(out)
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        assert types["blk.0.attn_norm.weight"] == "F32"
        assert ggml in set(types.values())
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # SmolLM2's 576-wide rows are not whole 256-blocks: llama.cpp's fallbacks are reported
    assert "do not fit Q4_K_M blocks" in result.output and "q4_K->q5_0" in result.output


@pytest.mark.parametrize("outtype, weight_type", [("bf16", "BF16"), ("q8_0", "Q8_0")])
def test_outtypes_and_metadata(smollm2_hf_checkpoint, tmp_path, outtype, weight_type):
    """Each output type holds the checkpoint's values (read independently with the safetensors library),
    1-D tensors stay F32, the tied output matrix is not duplicated, and source and revision are recorded."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from mental_edge.convert import convert_checkpoint
    from mental_edge.convert.arch.llama import permute
    from safetensors.torch import load_file as load_torch  # bf16 is not a numpy type

    out = convert_checkpoint(
        smollm2_hf_checkpoint,
        tmp_path / "m.gguf",
        outtype=outtype,
        source="HuggingFaceTB/SmolLM2-135M-Instruct",
        revision="0123abc",
    )
    reader = GGUFReader(out)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("general.name") == "SmolLM2-135M-Instruct"
    assert field("general.source.url") == "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"
    assert field("general.source.revision") == "0123abc"
    config = json.loads((smollm2_hf_checkpoint / "config.json").read_text())
    assert field("llama.embedding_length") == config["hidden_size"]
    assert field("llama.attention.head_count_kv") == config["num_key_value_heads"]
    assert abs(field("llama.attention.layer_norm_rms_epsilon") - config["rms_norm_eps"]) < 1e-9
    assert field("llama.rope.freq_base") == config["rope_theta"]

    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and len(tensors) == 272
    source = {k: v.float().numpy() for k, v in load_torch(smollm2_hf_checkpoint / "model.safetensors").items()}
    checks = {
        "token_embd.weight": source["model.embed_tokens.weight"],
        "blk.7.attn_norm.weight": source["model.layers.7.input_layernorm.weight"],
        "blk.7.attn_k.weight": permute(source["model.layers.7.self_attn.k_proj.weight"], 3),
        "blk.7.ffn_down.weight": source["model.layers.7.mlp.down_proj.weight"],
    }
    for name, expected in checks.items():
        t = tensors[name]
        assert t.tensor_type.name == ("F32" if expected.ndim == 1 else weight_type), name
        got = dequantize(t.data, t.tensor_type).reshape(expected.shape)
        if outtype == "bf16" or expected.ndim == 1:
            np.testing.assert_array_equal(got, expected)
        else:  # Q8_0: integers times a per-32-block step max|x|/127 stored in f16: half a step, plus up to
            # 127 steps times the f16 rounding of the step (2^-11 relative), so 0.56 step at most
            step = np.abs(expected.reshape(-1, 32)).max(1, keepdims=True) / 127
            assert np.all(np.abs(got.reshape(-1, 32) - expected.reshape(-1, 32)) <= 0.57 * step + 1e-7), name
