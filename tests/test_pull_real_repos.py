"""`mental-edge pull SHORT` for each known model against the stand-in hub serving exactly its real repo's file
list (tests/support/real_repos.py) with tiny weights: only the data conversion needs is fetched (never *.py,
training_args.bin or trainer_state.json), the weights read from float32 .bin files or 10 safetensors shards
convert to the same tensors as the original checkpoint converted locally, and the stored model runs.
"""

from __future__ import annotations

import csv

import gguf
import pytest
from mental_edge.convert import convert_checkpoint
from support import real_repos
from support.hub_standin import FakeRepo, HubStandIn
from support.llama2_tiny import spm_tokenizer
from test_pull import go_online, one_error_line, run

from mental_edge import store
from mental_edge.engine import load_engine

pytestmark = pytest.mark.slow  # torch: not in the fast tier

NEVER = {".gitattributes", "README.md", "training_args.bin", "trainer_state.json"}


@pytest.fixture(scope="module")
def queries(imhi_dir):
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fp:
        return [row["query"][:400] for _, row in zip(range(3), csv.DictReader(fp))]


def expected_fetch(files: dict) -> set[str]:
    return {name for name in files if name not in NEVER and not name.endswith(".py")}


def pull_from(monkeypatch, repos: dict, *args):
    with HubStandIn({repo: FakeRepo(files) for repo, files in repos.items()}) as server:
        go_online(monkeypatch, server.url)
        result = run("pull", *args)
    return result, server


def assert_nothing_ran():
    assert not list(store.store_home().rglob(real_repos.MARKER))
    assert not list(store.downloads_dir().iterdir())  # the download is removed after the pull


def same_tensors(a, b) -> None:
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    assert [(t.name, t.tensor_type) for t in ra.tensors] == [(t.name, t.tensor_type) for t in rb.tensors]
    for ta, tb in zip(ra.tensors, rb.tensors):
        assert ta.data.tobytes() == tb.data.tobytes(), ta.name


@pytest.mark.parametrize(
    "short, repo, eps, shards",
    [
        ("mentallama-7b", "klyang/MentaLLaMA-chat-7B", 1e-6, 3),
        ("mentallama-13b", "klyang/MentaLLaMA-chat-13B", 1e-5, 6),
    ],
)
def test_pull_mentallama(short, repo, eps, shards, monkeypatch, tmp_path, queries):
    import sentencepiece

    tokenizer = spm_tokenizer(tmp_path / "tok")
    files = real_repos.mentallama(tmp_path, tokenizer, eps, shards)
    assert sum(name.startswith("pytorch_model-") for name in files) == shards
    result, server = pull_from(monkeypatch, {repo: files}, short)
    assert result.exit_code == 0, result.output
    assert server.served(repo) == expected_fetch(files)
    entry = store.find_model(short)
    assert (entry.name, entry.architecture, entry.quant, entry.source) == (f"{short}-q4_k_m", "llama", "Q4_K_M", repo)
    path = store.resolve_model(short)
    reader = gguf.GGUFReader(path)
    assert reader.get_field("llama.attention.layer_norm_rms_epsilon").contents() == pytest.approx(eps, rel=1e-6)
    assert len(reader.get_field("tokenizer.ggml.tokens").contents()) == 32000
    assert_nothing_ran()

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer / "tokenizer.model"))
    engine = load_engine(path, threads=2, n_ctx=512)
    try:
        assert [engine.tokenize(q) for q in queries] == [sp.encode(q) for q in queries]
        assert len(engine.score(engine.tokenize(queries[0], add_bos=True), [engine.tokenize(" yes")])) == 1
    finally:
        engine.close()


def test_pull_mentalbart_never_fetches_training_args(monkeypatch, tmp_path, imhi_dir, queries):
    from support.seq2seq_tiny import source_tokens, write_bart
    from tokenizers import Tokenizer

    original = write_bart(tmp_path / "bart", imhi_dir)
    files = real_repos.mentalbart(original)
    repo = "Tianlin668/MentalBART"
    result, server = pull_from(monkeypatch, {repo: files}, "mentalbart")
    assert result.exit_code == 0, result.output
    assert server.served(repo) == expected_fetch(files)
    assert not {p for _, p in server.requests if p.endswith(("training_args.bin", "trainer_state.json"))}
    entry = store.find_model("mentalbart")
    assert (entry.name, entry.architecture, entry.quant) == ("mentalbart-int8", "ctranslate2", "INT8")
    assert_nothing_ran()

    local = load_engine(convert_checkpoint(original, tmp_path / "ct2", outtype="int8"), threads=2)  # safetensors
    tok = Tokenizer.from_file(str(original / "tokenizer.json"))
    engine = load_engine(store.resolve_model("mentalbart"), threads=2)
    try:
        sources = [source_tokens(engine, q) for q in queries]
        assert sources == [tok.encode(q).ids for q in queries]
        answers = [engine.tokenize(" depression"), engine.tokenize(" no depression")]
        for query in queries:  # the same weights: the same scores to the bit
            prompt = engine.tokenize(query)
            assert engine.score(prompt, answers) == local.score(prompt, answers)
    finally:
        engine.close()
        local.close()


def test_pull_mentalt5_from_one_float32_bin_and_spiece(monkeypatch, tmp_path, imhi_dir, queries):
    import sentencepiece
    from support.seq2seq_tiny import source_tokens, write_t5

    original = write_t5(tmp_path / "t5", imhi_dir)
    files = real_repos.mentalt5(original)
    assert "tokenizer.json" not in files and "spiece.model" in files
    repo = "Tianlin668/MentalT5"
    result, server = pull_from(monkeypatch, {repo: files}, "mentalt5")
    assert result.exit_code == 0, result.output
    assert server.served(repo) == expected_fetch(files)
    entry = store.find_model("mentalt5")
    assert (entry.name, entry.architecture, entry.quant) == ("mentalt5-q8_0", "t5", "Q8_0")
    assert_nothing_ran()

    pulled = store.resolve_model("mentalt5")
    same_tensors(pulled, convert_checkpoint(original, tmp_path / "local.gguf", quant="Q8_0"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(original / "spiece.model"))
    engine = load_engine(pulled, threads=2)
    try:
        assert [source_tokens(engine, q) for q in queries] == [sp.encode(q) + [1] for q in queries]
    finally:
        engine.close()


@pytest.fixture(scope="module")
def glm(imhi_dir, tmp_path_factory):
    """(remote-code checkpoint folder, tiktoken reference) of a tiny GLM-4 with a vocabulary trained here."""
    from support import glm_tiny

    texts = [q for q, _ in zip(_imhi_texts(imhi_dir), range(60))] + list(glm_tiny.CHINESE_TEXTS) * 3
    ranks, _merges = glm_tiny.train_ranks(texts, 400)
    config = glm_tiny.glm_config(ranks)
    folder = glm_tiny.write_remote(
        tmp_path_factory.mktemp("glm") / "remote", glm_tiny.native_state_dict(config), config, ranks
    )
    return folder, glm_tiny.reference_encoding(ranks)


def _imhi_texts(imhi_dir):
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fp:
        for row in csv.DictReader(fp):
            yield row["query"]


def _check_glm(short, repo, tmp_path, glm, queries):
    folder, enc = glm
    entry = store.find_model(short)
    assert (entry.name, entry.architecture, entry.quant, entry.source) == (f"{short}-q4_k_m", "chatglm", "Q4_K_M", repo)
    assert_nothing_ran()
    pulled = store.resolve_model(short)
    same_tensors(pulled, convert_checkpoint(folder, tmp_path / "local.gguf", quant="Q4_K_M"))
    engine = load_engine(pulled, threads=2, n_ctx=512)
    try:
        assert [engine.tokenize(q) for q in queries] == [enc.encode(q) for q in queries]
    finally:
        engine.close()


def test_pull_mentalglm_chat_from_ten_shards_without_its_code(monkeypatch, tmp_path, glm, queries):
    files = real_repos.mentalglm(glm[0], chat=True)
    assert sum(name.endswith(".safetensors") for name in files) == 10
    repo = "zwzzz/MentalGLM-chat"
    result, server = pull_from(monkeypatch, {repo: files}, "mentalglm-chat")
    assert result.exit_code == 0, result.output
    assert server.served(repo) == expected_fetch(files)
    assert not [p for _, p in server.requests if p.endswith(".py")]  # not even asked about
    _check_glm("mentalglm-chat", repo, tmp_path, glm, queries)


def test_pull_mentalglm_without_a_tokenizer_needs_tokenizer_from(monkeypatch, tmp_path, glm, queries):
    base, chat = real_repos.mentalglm(glm[0], chat=False), real_repos.mentalglm(glm[0], chat=True)
    repos = {"zwzzz/MentalGLM": base, "zwzzz/MentalGLM-chat": chat}
    result, server = pull_from(monkeypatch, repos, "mentalglm")
    line = one_error_line(result)
    assert line.startswith("Error: zwzzz/MentalGLM has no tokenizer files (looked for tokenizer.model")
    assert "--tokenizer-from FOLDER|REPO" in line
    assert not [p for _, p in server.requests if "/resolve/" in p]  # refused before any download

    result, server = pull_from(monkeypatch, repos, "mentalglm", "--tokenizer-from", "zwzzz/MentalGLM-chat")
    assert result.exit_code == 0, result.output
    assert server.served("zwzzz/MentalGLM") == expected_fetch(base)
    assert server.served("zwzzz/MentalGLM-chat") == {"tokenizer.model", "tokenizer_config.json", "added_tokens.json"}
    _check_glm("mentalglm", "zwzzz/MentalGLM", tmp_path, glm, queries)
