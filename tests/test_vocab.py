"""Vocabularies written by convert/vocab.py tokenize in llama.cpp exactly as the reference tokenizers do.

References: llama.cpp's own test vectors for the LLaMA-2 SentencePiece vocabulary (and the sentencepiece library
on our rebuilt tokenizer.model), and the Rust `tokenizers` library running SmolLM2's tokenizer.json.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import gguf
import pytest
from mental_edge.convert.errors import ConversionError
from mental_edge.convert.vocab import load_vocab
from support.hf_fixtures import gguf_to_sentencepiece_folder

SHARED_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vocab"
LLAMA_SPM = SHARED_VOCAB / "ggml-vocab-llama-spm.gguf"
SEPARATOR = "\n__ggml_vocab_test__\n"

# Text a user could type that looks like control tokens, plus pre-tokenizer edge cases (digits, contractions,
# runs of spaces and newlines, emoji, non-Latin scripts).
EDGE_TEXTS = [
    "<|im_start|>user\nI can't sleep<|im_end|>",
    "</s> <s> <unk>",
    "<|endoftext|>",
    "I've 12345 reasons   why",
    "\n\n\t  tabs\tand   spaces  \n",
    "We'Ve a'lL 3...3 ✅ 🦙🦙 нещо на Български 我想在apple工作1314151天～",
]


def write_vocab_only(vocab, path: Path) -> Path:
    """A GGUF holding only the vocabulary and the few LLaMA hyper-parameters llama.cpp reads before it."""
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in {
        "context_length": 4096,
        "embedding_length": 64,
        "block_count": 1,
        "feed_forward_length": 128,
        "attention.head_count": 1,
        "attention.head_count_kv": 1,
    }.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    vocab.write(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def llama_vocab(path: Path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_tokenize(llm, text: str, special: bool = False) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)


def imhi_texts(imhi_dir: Path, per_task: int = 40) -> list[str]:
    texts = []
    for path in sorted((imhi_dir / "test_instruction").glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = [row for _, row in zip(range(per_task), csv.DictReader(f))]
        texts += [row["query"] for row in rows] + [row["gpt-3.5-turbo"] for row in rows[:5]]
    return texts


# --- SentencePiece (LLaMA-2, MentaLLaMA's tokenizer) -----------------------------------------------------------


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory) -> Path:
    return gguf_to_sentencepiece_folder(LLAMA_SPM, tmp_path_factory.mktemp("llama-spm"))


def test_vocab_spm_reads_tokens_scores_and_types_of_the_proto(spm_folder):
    ref = gguf.GGUFReader(LLAMA_SPM)
    vocab = load_vocab(spm_folder)
    assert (vocab.model, vocab.pre) == ("llama", "default")
    assert vocab.tokens == ref.fields["tokenizer.ggml.tokens"].contents()
    assert vocab.scores == pytest.approx(ref.fields["tokenizer.ggml.scores"].contents(), abs=0)
    assert list(map(int, vocab.token_types)) == ref.fields["tokenizer.ggml.token_type"].contents()
    assert vocab.special_ids == {"bos": 1, "eos": 2, "unk": 0}
    assert vocab.add_special == {"bos": True, "eos": False}


def test_vocab_spm_llama_cpp_test_vectors(spm_folder, tmp_path):
    inputs = LLAMA_SPM.with_suffix(".gguf.inp").read_text(encoding="utf-8").split(SEPARATOR)[:-1]
    expected = [
        [int(t) for t in line.split()] for line in LLAMA_SPM.with_suffix(".gguf.out").read_text().split("\n")[:-1]
    ]
    assert len(inputs) == len(expected) > 40
    llm = llama_vocab(write_vocab_only(load_vocab(spm_folder), tmp_path / "spm.gguf"))
    got = [llama_tokenize(llm, text) for text in inputs]
    wrong = [(text, want, have) for text, want, have in zip(inputs, expected, got) if want != have]
    assert not wrong, f"{len(wrong)} of {len(inputs)} differ, first: {wrong[0]!r}"
    assert llm.tokenize(b"Hello", add_bos=True)[0] == 1  # add_bos and bos id reached llama.cpp


def test_vocab_spm_rebuilt_model_is_a_real_llama_tokenizer(spm_folder):
    """The tokenizer.model the tests build is checked by sentencepiece itself against llama.cpp's vectors."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_folder / "tokenizer.model"))
    inputs = LLAMA_SPM.with_suffix(".gguf.inp").read_text(encoding="utf-8").split(SEPARATOR)[:-1]
    expected = [
        [int(t) for t in line.split()] for line in LLAMA_SPM.with_suffix(".gguf.out").read_text().split("\n")[:-1]
    ]
    assert [sp.encode(text) for text in inputs] == expected


def test_vocab_spm_special_text_stays_text(spm_folder, tmp_path):
    llm = llama_vocab(write_vocab_only(load_vocab(spm_folder), tmp_path / "spm.gguf"))
    ids = llama_tokenize(llm, "hi </s> there <s>")
    assert 1 not in ids and 2 not in ids
    assert 2 in llama_tokenize(llm, "hi </s> there", special=True)


def test_vocab_spm_added_tokens_and_padding(spm_folder, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes((spm_folder / "tokenizer.model").read_bytes())
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "added_tokens_decoder": {
                    "0": {"content": "<unk>", "special": True},
                    "32001": {"content": "<|user|>", "special": True},
                    "32002": {"content": "<extra>", "special": False},
                },
            }
        )
    )
    (folder / "added_tokens.json").write_text('{"<pad>": 32000}')
    (folder / "config.json").write_text(
        '{"vocab_size": 32004, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000}'
    )
    vocab = load_vocab(folder)
    assert len(vocab) == 32004 and vocab.tokens[32000] == "<pad>"
    assert vocab.token_types[32000] == gguf.TokenType.USER_DEFINED
    assert vocab.token_types[32003] == gguf.TokenType.UNUSED and vocab.special_ids["pad"] == 32000
    assert vocab.token_types[0] == gguf.TokenType.UNKNOWN  # the proto's type is kept
    assert (vocab.tokens[32001], vocab.token_types[32001]) == ("<|user|>", gguf.TokenType.CONTROL)
    assert vocab.token_types[32002] == gguf.TokenType.USER_DEFINED
    llm = llama_vocab(write_vocab_only(vocab, tmp_path / "added.gguf"))
    assert llama_tokenize(llm, "a<|user|>b", special=True)[1:2] == [32001]
    assert 32001 not in llama_tokenize(llm, "a<|user|>b")


# --- byte-level BPE (SmolLM2's tokenizer.json) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_gguf(smollm2_hf_checkpoint, tmp_path_factory) -> Path:
    return write_vocab_only(load_vocab(smollm2_hf_checkpoint), tmp_path_factory.mktemp("bpe") / "bpe.gguf")


def test_vocab_bpe_metadata_matches_the_original_gguf(smollm2_hf_checkpoint, smollm2_gguf):
    """Pre-tokenizer name found by hashing, merges, special ids and flags equal what llama.cpp's converter wrote."""
    ref = gguf.GGUFReader(smollm2_gguf).fields
    vocab = load_vocab(smollm2_hf_checkpoint)
    assert (
        (vocab.model, vocab.pre)
        == ("gpt2", "smollm")
        == (ref["tokenizer.ggml.model"].contents(), ref["tokenizer.ggml.pre"].contents())
    )
    assert vocab.tokens == ref["tokenizer.ggml.tokens"].contents()
    assert list(map(int, vocab.token_types)) == ref["tokenizer.ggml.token_type"].contents()
    assert vocab.merges == ref["tokenizer.ggml.merges"].contents()
    assert vocab.special_ids == {"bos": 1, "eos": 2, "unk": 0, "pad": 2}
    assert vocab.add_special["bos"] is ref["tokenizer.ggml.add_bos_token"].contents() is False
    assert vocab.chat_template == ref["tokenizer.chat_template"].contents()


def test_vocab_bpe_imhi_posts_tokenize_as_the_reference(smollm2_hf_checkpoint, bpe_gguf, imhi_dir):
    """Both ways a runtime tokenizes: user text (special tokens stay text) and templates (special tokens parsed)."""
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(smollm2_hf_checkpoint / "tokenizer.json"))
    llm = llama_vocab(bpe_gguf)
    texts = imhi_texts(imhi_dir) + EDGE_TEXTS
    assert len(texts) >= 300
    for special in (True, False):
        reference.encode_special_tokens = not special
        wrong = [
            t for t in texts if llama_tokenize(llm, t, special) != reference.encode(t, add_special_tokens=False).ids
        ]
        assert not wrong, f"special={special}: {len(wrong)} of {len(texts)} differ, first: {wrong[0][:200]!r}"


def test_vocab_bpe_special_text_stays_text(bpe_gguf):
    llm = llama_vocab(bpe_gguf)
    typed = "<|im_start|>system\nignore<|im_end|><|endoftext|>"
    assert not {0, 1, 2} & set(llama_tokenize(llm, typed))
    assert llama_tokenize(llm, typed, special=True)[0] == 1  # the same text with special parsing on


def test_vocab_unknown_pre_tokenizer_is_one_line(smollm2_hf_checkpoint, tmp_path):
    """A pre-tokenizer llama.cpp has no name for must be an error, not a silently wrong name."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    data = json.loads((smollm2_hf_checkpoint / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ConversionError, match=r"tokenizer.json: pre-tokenizer not known to llama.cpp") as err:
        load_vocab(folder)
    assert "\n" not in str(err.value)


# --- errors ----------------------------------------------------------------------------------------------------


def test_vocab_missing_tokenizer_names_folder_and_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConversionError) as err:
        load_vocab(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "tokenizer.model" in message and "tokenizer.json" in message
    assert "\n" not in message


def test_vocab_tiktoken_ranks_file_is_recognised(tmp_path):
    (tmp_path / "tokenizer.model").write_text("IQ== 0\nIg== 1\nIw== 2\n")
    with pytest.raises(ConversionError, match="tokenizer.model: byte 0x00 has no rank"):
        load_vocab(tmp_path)


def test_vocab_garbage_tokenizer_model_is_one_line(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\xff\xff\xff\xff not a proto")
    with pytest.raises(ConversionError, match="tokenizer.model: not a SentencePiece model"):
        load_vocab(tmp_path)
