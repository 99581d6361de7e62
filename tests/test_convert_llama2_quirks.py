"""What LLaMA-2 fine-tunes ship and llama.cpp's converter stops at ("wrong shape"), converted by `mental-edge
convert` and checked in llama.cpp against transformers (float32 weights on both sides):

- a pad token added to the tokenizer (32,001 tokens) over an embedding of 32,000 rows: the trailing added token
  is dropped with one line naming it;
- an embedding larger than the tokenizer (32,008 rows): padded with placeholder tokens, as --pad-vocab does;
- no tokenizer files at all: one line naming what is missing; --tokenizer-from gives the base model's;
- rms_norm_eps read from config.json (1e-6 in MentaLLaMA-chat-7B, 1e-5 in the 13B): the other value is shown
  to change the logits far beyond the tolerance, so a converter that assumed one would fail here.

Tolerance: the weights are float32 in the GGUF too; what remains is llama.cpp's f16 KV cache (relative error
2^-11 on every key and value), measured at 0.016 on logits of about 2.5 in size; 0.05 is the round-trip test's.
"""

from __future__ import annotations

import csv

import gguf
import numpy as np
import pytest
from click.testing import CliRunner
from support.llama2_tiny import N_PIECES, add_pad_token, spm_tokenizer, transformers_logits, write_fine_tune
from test_convert_roundtrip import llama_logits

from mental_edge.cli import main

pytestmark = pytest.mark.slow  # torch: not in the fast tier

TOL = 0.05
N_PROMPTS, MAX_TOKENS = 3, 160


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return spm_tokenizer(tmp_path_factory.mktemp("llama2-tokenizer"))


@pytest.fixture(scope="module")
def prompts(imhi_dir):
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fp:
        return [row["query"] for _, row in zip(range(N_PROMPTS), csv.DictReader(fp))]


@pytest.fixture(scope="module")
def reference_ids(tokenizer, prompts):
    """sentencepiece's own ids (with LLaMA's BOS) for the prompts: the tokenizer everyone else is checked against."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer / "tokenizer.model"))
    return [[1] + sp.encode(p)[: MAX_TOKENS - 1] for p in prompts]


def convert(src, out, *extra):
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "--outtype", "f32", *map(str, extra)])
    assert "Traceback" not in result.output, result.output
    return result


def assert_same_as_transformers(folder, gguf_path, ids, n_vocab, eps):
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), vocab_only=True, verbose=False)
    assert llm.n_vocab() == n_vocab
    llm.close()
    reader = gguf.GGUFReader(gguf_path)
    assert reader.get_field("llama.attention.layer_norm_rms_epsilon").contents() == pytest.approx(eps, rel=1e-6)
    ours = llama_logits(gguf_path, ids)
    ref = transformers_logits(folder, ids)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, ref))
    same = sum(int(np.sum(a.argmax(-1) == b.argmax(-1))) for a, b in zip(ours, ref))
    total = sum(len(x) for x in ids)
    print(f"\n{gguf_path.name} vs transformers fp32: top-1 {same}/{total}, worst logit diff {worst:.2e}")
    assert ours[0].shape[1] == n_vocab and same == total and worst < TOL
    other = transformers_logits(folder, ids, eps=1e-5 if eps == 1e-6 else 1e-6)
    wrong_eps = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, other))
    print(f"  the same against rms_norm_eps {1e-5 if eps == 1e-6 else 1e-6}: worst logit diff {wrong_eps:.2f}")
    assert wrong_eps > 10 * TOL


def test_added_pad_token_without_a_weight_row_is_dropped_with_one_line(tmp_path, tokenizer, reference_ids, prompts):
    folder = add_pad_token(write_fine_tune(tmp_path / "ft", tokenizer, rows=N_PIECES, eps=1e-6))
    out = tmp_path / "ft.gguf"
    result = convert(folder, out)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("tokenizer:")]
    assert notes == [
        f"tokenizer: dropped 1 added token(s) that no weight row backs ({folder / 'config.json'}: "
        f"vocab_size {N_PIECES}): '<pad>' (id {N_PIECES})"
    ]
    tokens = gguf.GGUFReader(out).get_field("tokenizer.ggml.tokens").contents()
    assert len(tokens) == N_PIECES and "<pad>" not in tokens

    from llama_cpp import Llama

    llm = Llama(str(out), vocab_only=True, verbose=False)
    assert [llm.tokenize(p.encode(), add_bos=True)[:MAX_TOKENS] for p in prompts] == reference_ids
    assert llm.tokenize(b"a <pad> b", add_bos=False, special=True) == llm.tokenize(b"a <pad> b", add_bos=False)
    llm.close()
    assert_same_as_transformers(folder, out, reference_ids, N_PIECES, 1e-6)


def test_embedding_larger_than_the_tokenizer_is_padded_as_pad_vocab_does(tmp_path, tokenizer, reference_ids):
    rows = N_PIECES + 8
    folder = write_fine_tune(tmp_path / "ft", tokenizer, rows=rows, eps=1e-5, seed=1)
    out = tmp_path / "ft.gguf"
    result = convert(folder, out)
    assert result.exit_code == 0, result.output
    assert f"padded to {folder / 'config.json'}'s vocab_size {rows} with 8 placeholder token(s)" in result.output
    reader = gguf.GGUFReader(out)
    placeholders = [f"[PAD{i}]" for i in range(N_PIECES, rows)]
    assert reader.get_field("tokenizer.ggml.tokens").contents()[N_PIECES:] == placeholders
    types = reader.get_field("tokenizer.ggml.token_type").contents()[N_PIECES:]
    assert types == [gguf.TokenType.UNUSED] * 8
    assert_same_as_transformers(folder, out, reference_ids, rows, 1e-5)


def test_no_tokenizer_is_one_line_and_tokenizer_from_supplies_the_base_one(tmp_path, tokenizer, reference_ids, prompts):
    folder = write_fine_tune(tmp_path / "ft", None, eps=1e-6, seed=2)
    out = tmp_path / "ft.gguf"
    result = convert(folder, out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {folder}: no tokenizer found"), result.output
    assert "tokenizer.model, spiece.model, tokenizer.json" in lines[0] and "--tokenizer-from" in lines[0]
    assert not out.exists()

    result = convert(folder, out, "--tokenizer-from", tokenizer)
    assert result.exit_code == 0, result.output
    from llama_cpp import Llama

    llm = Llama(str(out), vocab_only=True, verbose=False)
    assert [llm.tokenize(p.encode(), add_bos=True)[:MAX_TOKENS] for p in prompts] == reference_ids
    llm.close()
    assert_same_as_transformers(folder, out, reference_ids, N_PIECES, 1e-6)


def test_tokenizer_larger_than_the_embedding_by_its_own_pieces_is_refused(tmp_path, tokenizer):
    folder = write_fine_tune(tmp_path / "ft", tokenizer, rows=N_PIECES - 10)
    result = convert(folder, tmp_path / "ft.gguf")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {folder / 'config.json'}: vocab_size {N_PIECES - 10} is smaller than the tokenizer's {N_PIECES} tokens"
    )


def test_missing_rms_norm_eps_is_one_line_not_a_default(tmp_path, tokenizer):
    import json

    folder = write_fine_tune(tmp_path / "ft", tokenizer)
    config = json.loads((folder / "config.json").read_text())
    del config["rms_norm_eps"]
    (folder / "config.json").write_text(json.dumps(config))
    result = convert(folder, tmp_path / "ft.gguf")
    assert result.exit_code == 1 and result.output.strip() == "Error: config.json: missing field rms_norm_eps"
