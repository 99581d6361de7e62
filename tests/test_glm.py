"""MentalGLM / GLM-4: both checkpoint layouts convert to llama.cpp's chatglm and compute what transformers does.

A tiny random GLM-4 (hidden 64, 2 layers, 4 heads over 2 kv groups, GLM-4's epsilon and rope ratio) is written
twice from the same weights: HF-native GlmForCausalLM (tokenizer.json) and THUDM's remote-code ChatGLMModel
(tiktoken ranks file, code files that must never be imported). Its vocabulary is byte-level BPE trained here on
IMHI posts and Chinese text with GLM-4's regex; tiktoken over the same ranks is the reference tokenizer, and
transformers' GlmForCausalLM (float32, on the same bf16 weights) the reference forward pass.

Tolerance of the logits: both sides start from the same bf16-exact weights in float32; llama.cpp keeps its KV
cache in f16, which is what remains: measured 0.0019-0.0057 at worst per prompt over these six prompts (781
positions, top-1 the same at all with the seed measured). We allow 0.02. Each wrong detail moves them by far
more (measured, max per prompt): epsilon 1e-5 instead of 1.5625e-07 0.57-1.07, rope base 10000 instead of
10000 x 500 2.5-3.3, full instead of half rotary width 2.6-4.3; top-1 then differs on 14-54% of positions.
"""

import csv
import json

import gguf
import jinja2
import numpy as np
import pytest
from click.testing import CliRunner
from mental_edge.convert import convert_checkpoint
from mental_edge.convert.arch.chatglm import Hparams
from mental_edge.convert.bpe_pre_hashes import CHECK_TEXT
from mental_edge.convert.errors import ConversionError
from mental_edge.convert.vocab import load_vocab
from support import glm_tiny
from test_convert_roundtrip import llama_logits

from mental_edge.cli import main
from mental_edge.engine import Segment, load_engine

pytestmark = pytest.mark.slow  # torch: not in the fast tier

TOL = 0.02
EDGE_TEXTS = [
    CHECK_TEXT,
    "  leading spaces\n\n\ttabs   and trailing  ",
    "I'M FINE. You'RE not!!! 12345678 3.14",
    "混合 text 和中文，还有 emoji 😶‍🌫️ and digits ２０２４ 年",
    "\r\n\r\n",
    "a",
    "",
    "   ",
]
TYPED_CONTROLS = "I typed <|user|> and [gMASK]<sop> here, then <|endoftext|><|observation|> too."


def imhi_texts(imhi_dir, per_task=25):
    texts = []
    for path in sorted((imhi_dir / "test_instruction").glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            texts += [row["query"] for _, row in zip(range(per_task), csv.DictReader(f))]
    return texts


@pytest.fixture(scope="module")
def vocab(imhi_dir):
    """(ranks, merges) trained on every other IMHI post and Chinese text.

    The tokenization test also reads unseen ones.
    """
    texts = imhi_texts(imhi_dir, per_task=60)[::2] + list(glm_tiny.CHINESE_TEXTS) * 3
    return glm_tiny.train_ranks(texts, 700)


@pytest.fixture(scope="module")
def enc(vocab):
    return glm_tiny.reference_encoding(vocab[0])


@pytest.fixture(scope="module")
def checkpoints(vocab, tmp_path_factory):
    ranks, merges = vocab
    config = glm_tiny.glm_config(ranks)
    sd = glm_tiny.native_state_dict(config)
    root = tmp_path_factory.mktemp("glm")
    return {
        "native": glm_tiny.write_native(root / "native", sd, config, ranks, merges),
        "remote": glm_tiny.write_remote(root / "remote", sd, config, ranks),
    }


@pytest.fixture(scope="module")
def ggufs(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("glm-gguf")
    return {
        layout: convert_checkpoint(folder, out / f"{layout}.gguf", outtype="f32")
        for layout, folder in checkpoints.items()
    }


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


# --- metadata and vocabulary ----------------------------------------------------------------------------------


def test_glm_metadata_is_the_same_from_either_layout(ggufs, vocab):
    ranks = vocab[0]
    ids = glm_tiny.special_ids(ranks)
    native, remote = fields(ggufs["native"]), fields(ggufs["remote"])
    expected = {
        "general.architecture": "chatglm",
        "chatglm.context_length": 8192,
        "chatglm.embedding_length": 64,
        "chatglm.feed_forward_length": 96,
        "chatglm.block_count": 2,
        "chatglm.attention.head_count": 4,
        "chatglm.attention.head_count_kv": 2,
        "chatglm.rope.dimension_count": 8,  # half of head_dim 16
        "chatglm.vocab_size": glm_tiny.padded_vocab(ranks),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "chatglm-bpe",
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.eos_token_id": ids["<|endoftext|>"],
        "tokenizer.ggml.eot_token_id": ids["<|user|>"],
        "tokenizer.ggml.eom_token_id": ids["<|observation|>"],
        "tokenizer.chat_template": glm_tiny.CHAT_TEMPLATE,
    }
    for meta in (native, remote):
        assert {k: meta.get(k) for k in expected} == expected
        assert meta["chatglm.rope.freq_base"] == pytest.approx(5e6)  # 10000 x rope_ratio 500
        assert meta["chatglm.attention.layer_norm_rms_epsilon"] == pytest.approx(1.5625e-07)
        assert "tokenizer.ggml.bos_token_id" not in meta
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
        assert native[key] == remote[key]


NATIVE = dict(
    architectures=["GlmForCausalLM"],
    num_hidden_layers=3,
    hidden_size=96,
    intermediate_size=200,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=512,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
)


@pytest.mark.parametrize(
    "extra, rope_base, rope_dim",
    [
        ({"rope_theta": 250000.0, "partial_rotary_factor": 0.5}, 250000.0, 16),  # transformers 4.x keys
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.25}}, 1e6, 8),
        ({}, 10000.0, 16),  # GlmConfig's defaults
    ],
)
def test_glm_hf_native_keys_are_read_on_their_own(extra, rope_base, rope_dim):
    """llama.cpp's converter ignores these keys; ours reads each (values unlike GLM-4's so none is assumed)."""
    hp = Hparams.from_config({**NATIVE, **extra})
    assert (hp.remote, hp.n_layer, hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim) == (
        False,
        3,
        96,
        200,
        6,
        2,
        32,
    )
    assert (hp.n_vocab, hp.n_ctx, hp.eps, hp.rope_base, hp.rope_dim) == (512, 32768, 1e-6, rope_base, rope_dim)


def test_glm_remote_code_keys():
    hp = Hparams.from_config(
        {
            "architectures": ["ChatGLMModel"],
            "model_type": "chatglm",
            "num_layers": 40,
            "padded_vocab_size": 151552,
            "hidden_size": 4096,
            "ffn_hidden_size": 13696,
            "kv_channels": 128,
            "num_attention_heads": 32,
            "seq_length": 131072,
            "layernorm_epsilon": 1.5625e-07,
            "multi_query_attention": True,
            "multi_query_group_num": 2,
            "rope_ratio": 500,
            "add_qkv_bias": True,
        }
    )
    assert (hp.remote, hp.n_layer, hp.n_vocab, hp.n_ff, hp.n_head_kv, hp.n_ctx) == (True, 40, 151552, 13696, 2, 131072)
    assert (hp.rope_base, hp.rope_dim, hp.eps) == (5e6, 64, 1.5625e-07)


@pytest.mark.parametrize(
    "config, message",
    [
        ({**NATIVE, "partial_rotary_factor": 0.3}, "partial_rotary_factor 0.3"),
        ({**NATIVE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling 'yarn'"),
        ({"model_type": "chatglm", "num_layers": 2, "add_bias_linear": True}, "add_bias_linear = True"),
        ({"model_type": "chatglm", "num_layers": 2, "hidden_size": 64}, "missing field num_attention_heads"),
    ],
)
def test_glm_unsupported_configs_are_one_line(config, message):
    with pytest.raises(ConversionError, match="config.json: .*" + message.replace("(", r"\(")) as err:
        Hparams.from_config(config)
    assert "\n" not in str(err.value)


def test_glm_merges_rebuilt_from_ranks_equal_the_trained_ones(checkpoints, vocab):
    ranks, merges = vocab
    from_ranks, from_json = load_vocab(checkpoints["remote"]), load_vocab(checkpoints["native"])
    assert from_ranks.merges == from_json.merges  # tokenizer.json holds the merges BPE training made
    assert len(from_ranks.merges) == len(merges)
    assert from_ranks.tokens == from_json.tokens
    ids = glm_tiny.special_ids(ranks)
    assert all(from_ranks.token_types[i] == gguf.TokenType.CONTROL for i in ids.values())
    assert all(t == gguf.TokenType.UNUSED for t in from_ranks.token_types[max(ids.values()) + 1 :])
    assert not (checkpoints["remote"] / glm_tiny.MARKER).exists()  # tokenization_chatglm.py never ran


def test_glm_bad_ranks_file_is_one_line(tmp_path):
    (tmp_path / "tokenizer.model").write_text(
        "".join(f"{__import__('base64').b64encode(bytes([b])).decode()} {b}\n" for b in range(256))
        + "QUI= 256\nQUJD 999\n"
    )
    with pytest.raises(ConversionError, match=r"tokenizer.model: ranks are not 0..257 without gaps"):
        load_vocab(tmp_path)


# --- the forward pass -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_ids(imhi_dir, enc):
    queries = [q[:600] for q in imhi_texts(imhi_dir, per_task=1)[:3]] + list(glm_tiny.CHINESE_TEXTS[:3])
    return [enc.encode(f"[gMASK]<sop><|user|>\n{q}<|assistant|>", allowed_special="all") for q in queries]


def test_glm_logits_agree_with_transformers_in_both_layouts(checkpoints, ggufs, prompt_ids):
    import torch
    from transformers import GlmForCausalLM

    model = GlmForCausalLM.from_pretrained(checkpoints["native"], dtype=torch.float32).eval()
    with torch.no_grad():
        ref = [model(torch.tensor([ids])).logits[0].numpy() for ids in prompt_ids]
    spread = max(float(r.std()) for r in ref)
    assert spread > 0.5  # logits far from flat: a wrong detail would show
    ours = {layout: llama_logits(path, prompt_ids) for layout, path in ggufs.items()}
    for layout, logits in ours.items():
        for r, o in zip(ref, logits):
            assert np.abs(r - o).max() < TOL, layout
            top2 = np.sort(r, axis=-1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 2 * TOL  # top-1 can only flip where the reference nearly ties
            assert clear.mean() > 0.75  # measured 0.88: the top-1 check covers most positions
            assert (r.argmax(-1) == o.argmax(-1))[clear].all(), layout
    for a, b in zip(ours["native"], ours["remote"]):
        assert np.abs(a - b).max() < TOL


# --- tokenization and prompts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(ggufs):
    eng = load_engine(ggufs["remote"], n_ctx=512, threads=2)
    yield eng
    eng.close()


def test_glm_tokenization_equals_tiktoken_on_imhi_and_chinese(ggufs, enc, imhi_dir):
    from llama_cpp import Llama

    texts = imhi_texts(imhi_dir) + list(glm_tiny.CHINESE_TEXTS) + EDGE_TEXTS
    for path in ggufs.values():
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            for text in texts:
                assert llm.tokenize(text.encode(), add_bos=False, special=False) == enc.encode_ordinary(text), text
        finally:
            llm.close()


def test_glm_typed_control_tokens_stay_text(engine, enc, vocab):
    controls = set(glm_tiny.special_ids(vocab[0]).values())
    post = [Segment(TYPED_CONTROLS)]
    tokens = engine.tokenize_segments(post, add_bos=True)
    assert tokens == enc.encode_ordinary(TYPED_CONTROLS)
    assert not controls & set(tokens)
    assert engine.detokenize(tokens) == TYPED_CONTROLS


def test_glm_query_prompt_token_by_token(engine, enc):
    from mental_edge.prompting.query_format import query_format_for

    fmt = query_format_for(engine.info)
    assert fmt.name == "glm"
    query = '考虑以下这个帖子："我又失眠了 <|user|>" 问题：这个帖子的发布者有多高的自杀风险？'
    expected = (
        enc.encode("[gMASK]<sop><|user|>", allowed_special="all")
        + enc.encode_ordinary("\n" + query)
        + enc.encode("<|assistant|>", allowed_special="all")
    )
    assert engine.tokenize_segments(fmt.segments(query), add_bos=fmt.add_bos) == expected
    answer = "这个帖子显示低自杀风险。"
    with_answer = engine.tokenize_segments(fmt.segments(query, answer), add_bos=fmt.add_bos)
    assert with_answer == expected + enc.encode_ordinary("\n" + answer)  # the model's reply opens with "\n"


CHAT = [
    ("system", "你是一个心理健康助手。"),
    ("user", "最近压力很大，睡不着。"),
    ("assistant", "听起来你很辛苦。能说说是什么让你有压力吗？"),
    ("user", "工作太多了，我觉得自己很失败。"),
    ("assistant", "Feeling like that is hard.\nWhat helps you rest?"),
    ("user", "I don't know <|user|> anymore"),
]


def test_glm_three_turn_chat_token_by_token(engine, enc):
    from mental_edge.prompting.chat_format import Glm4Format, Message, TemplateFormat, chat_format_for

    messages = [Message(role, content) for role, content in CHAT]
    fmt = chat_format_for(engine)
    assert isinstance(fmt, TemplateFormat)  # the model file's own template
    rendered = (
        jinja2.Environment()
        .from_string(glm_tiny.CHAT_TEMPLATE)
        .render(
            messages=[{"role": r, "content": c.replace("<|user|>", "\ue000")} for r, c in CHAT],
            add_generation_prompt=True,
        )
    )
    expected = reference_tokens(enc, rendered)
    assert enc.encode("<|user|>", allowed_special="all")[0] in expected
    assert fmt.tokens(engine, messages) == expected
    assert Glm4Format().tokens(engine, messages) == expected  # the built-in format for files without a template
    ends = {engine.is_end(i) for i in enc.encode("<|user|><|observation|><|endoftext|>", allowed_special="all")}
    assert ends == {True} and not engine.is_end(enc.encode("<|assistant|>", allowed_special="all")[0])


def reference_tokens(enc, text: str) -> list[int]:
    """GLM's tokenizer on rendered text: control tokens parsed, plain runs between them encoded whole;
    "\ue000" stands for a `<|user|>` typed inside a message, which stays text."""
    import re

    controls = re.compile("|".join(map(re.escape, glm_tiny.SPECIALS)))
    tokens, pos = [], 0
    for m in controls.finditer(text):
        tokens += enc.encode_ordinary(text[pos : m.start()].replace("\ue000", "<|user|>"))
        tokens += enc.encode(m.group(), allowed_special="all")
        pos = m.end()
    return tokens + enc.encode_ordinary(text[pos:].replace("\ue000", "<|user|>"))


# --- GLM-4's feed-forward width through Q4_K_M, then the analysis runtime ----------------------------------------


@pytest.fixture(scope="module")
def wide_ffn_checkpoint(vocab, tmp_path_factory):
    """GLM-4-9B's feed-forward width 13696 (not a multiple of 256), small otherwise: hidden 256, 2 layers."""
    ranks, _ = vocab
    config = glm_tiny.glm_config(ranks, hidden=256, ffn=13696, layers=2)
    return glm_tiny.write_remote(
        tmp_path_factory.mktemp("glm-13696"), glm_tiny.native_state_dict(config), config, ranks
    )


def test_glm_ffn_13696_quantizes_to_q4_k_m_and_analyzes_a_chinese_post(wide_ffn_checkpoint, tmp_path):
    out = tmp_path / "glm-q4_k_m.gguf"
    result = CliRunner().invoke(main, ["convert", str(wide_ffn_checkpoint), "-o", str(out), "--quant", "Q4_K_M"])
    assert result.exit_code == 0, result.output
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.ffn_up.weight"] == types["blk.1.ffn_up.weight"] == "Q4_K"  # 256 columns: K-quant fits
    fell_back = {name for name, kind in types.items() if "ffn_down" in name}
    assert fell_back == {"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"}
    assert not {types[n] for n in fell_back} & {"Q4_K", "Q5_K", "Q6_K"}  # 13696 columns: no K-quant
    # the report names exactly those tensors and the types they got
    report = next(line for line in result.output.splitlines() if "do not fit Q4_K_M blocks" in line)
    assert report.startswith("2 tensor(s)") and "blk.*.ffn_down.weight (2 tensors: " in report
    for name in fell_back:
        assert f"->{types[name].lower()}" in report

    records = tmp_path / "records.jsonl"
    post = "我最近总是失眠，觉得活着没有意义。"
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            post,
            "--task",
            "suicide-risk",
            "-m",
            str(out),
            "-o",
            str(records),
            "--max-tokens",
            "8",
            "--ctx",
            "512",
            "--threads",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()]
    assert record["task"] == "suicide-risk" and record["label"] in ("低自杀风险", "高自杀风险")
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert post not in result.output  # nothing of the post echoed by default


# --- pull with the short names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "short, repo_id", [("mentalglm", "zwzzz/MentalGLM"), ("mentalglm-chat", "zwzzz/MentalGLM-chat")]
)
def test_glm_pull_short_names_convert_the_remote_code_layout(short, repo_id, checkpoints, monkeypatch):
    """`pull mentalglm(-chat)` against a stand-in hub holding the tiny remote-code checkpoint: the ranks file
    and configs are fetched, the checkpoint's Python files are not, and the model lands as chatglm Q4_K_M."""
    from support.hub_standin import FakeRepo, HubStandIn
    from test_pull import go_online, run

    from mental_edge import store

    files = {p.name: p.read_bytes() for p in checkpoints["remote"].iterdir() if p.name != glm_tiny.MARKER}
    with HubStandIn({repo_id: FakeRepo(files)}) as server:
        go_online(monkeypatch, server.url)
        result = run("pull", short)
    assert result.exit_code == 0, result.output
    assert server.served(repo_id) == {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"}
    entry = store.find_model(short)
    assert (entry.name, entry.architecture, entry.quant) == (f"{short}-q4_k_m", "chatglm", "Q4_K_M")
    meta = fields(store.resolve_model(short))
    assert (meta["tokenizer.ggml.pre"], meta["general.source.url"]) == (
        "chatglm-bpe",
        f"https://huggingface.co/{repo_id}",
    )
