"""pull and download_checkpoint against a local stand-in of the hub: the real huggingface-hub code runs."""

import json
import socket

import numpy as np
import pytest
from gguf import LlamaFileType
from support.cli import one_error_line, run
from support.gguf_tiny import write_tiny_gguf
from support.hub_standin import FakeRepo, HubStandIn
from support.llama_shapes import llama_shapes

from mental_edge import store
from mental_edge.errors import MentalEdgeError
from mental_edge.store import hub, pull

GGUF_REPO = "someone/Tiny-GGUF"
CKPT_REPO = "someone/tiny-llama"

# What a 2023 checkpoint repo ships beside what conversion needs.
NOT_NEEDED = {
    "README.md": b"# card",
    ".gitattributes": b"*.bin filter=lfs",
    "modeling_llama.py": b"raise SystemExit('never run me')",
    "tokenization_llama.py": b"raise SystemExit('never run me')",
    "pytorch_model.bin": b"a twin of the safetensors",
    "optimizer.pt": b"optimizer state",
    "training_args.bin": b"pickle",
    "onnx/model.safetensors": b"another export",
    "adapter_model.safetensors": b"a LoRA",
}


def go_online(monkeypatch, url: str) -> None:
    """huggingface-hub reads HF_HUB_OFFLINE and HF_ENDPOINT at import: set the variables and its copies."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", url)
    # Its copies of the endpoint too: its user-agent code calls the endpoint once per process.
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def gguf_repo(tmp_path):
    files = {"README.md": b"# card"}
    for ft in (LlamaFileType.MOSTLY_Q4_K_M, LlamaFileType.MOSTLY_Q8_0, LlamaFileType.MOSTLY_F16):
        name = f"tiny.{ft.name.removeprefix('MOSTLY_')}.gguf"
        files[name] = write_tiny_gguf(tmp_path / name, ft, seed=int(ft)).read_bytes()
    return FakeRepo(files)


@pytest.fixture
def ckpt_files(tmp_path):
    """The files conversion needs (content is irrelevant to the download path)."""
    return {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"]}).encode(),
        "generation_config.json": b"{}",
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
        "special_tokens_map.json": b"{}",
        "model.safetensors.index.json": b"{}",
        "model-00001-of-00002.safetensors": b"shard one",
        "model-00002-of-00002.safetensors": b"shard two",
    }


@pytest.fixture
def online_hub(monkeypatch, gguf_repo, ckpt_files):
    with HubStandIn({GGUF_REPO: gguf_repo, CKPT_REPO: FakeRepo({**ckpt_files, **NOT_NEEDED})}) as server:
        go_online(monkeypatch, server.url)
        yield server


def test_pull_gguf_repo_takes_the_default_file_as_is(online_hub, gguf_repo):
    result = run("pull", GGUF_REPO)
    assert result.exit_code == 0, result.output
    assert "taking tiny.Q4_K_M.gguf" in result.output
    assert online_hub.served(GGUF_REPO) == {"tiny.Q4_K_M.gguf"}

    (entry,) = store.list_models()
    assert (entry.name, entry.architecture, entry.quant) == ("tiny-q4_k_m", "llama", "Q4_K_M")
    assert (entry.source, entry.revision) == (GGUF_REPO, gguf_repo.sha)
    assert store.resolve_model("tiny").read_bytes() == gguf_repo.files["tiny.Q4_K_M.gguf"]
    assert list(store.downloads_dir().iterdir()) == []

    again = run("pull", GGUF_REPO)  # same revision: nothing fetched again
    assert "already in the store" in again.output
    assert sum(m == "GET" and "/resolve/" in p for m, p in online_hub.requests) == 1

    gguf_repo.sha, old_sha = "f" * 40, gguf_repo.sha  # a new commit replaces the old copy
    gguf_repo.files["tiny.Q4_K_M.gguf"] = gguf_repo.files["tiny.Q8_0.gguf"]
    assert f"replace the store's copy from {GGUF_REPO} {old_sha[:12]}" in run("pull", GGUF_REPO).output
    (entry,) = store.list_models()
    assert entry.revision == "f" * 40 and entry.quant == "Q8_0"  # the file type is read, not the name


def test_pull_gguf_repo_with_quant_and_revision(online_hub, gguf_repo):
    entry = pull.pull(GGUF_REPO, quant="q8_0", revision=gguf_repo.sha)
    assert (entry.name, entry.quant, entry.revision) == ("tiny-q8_0", "Q8_0", gguf_repo.sha)
    assert online_hub.served(GGUF_REPO) == {"tiny.Q8_0.gguf"}

    line = one_error_line(run("pull", GGUF_REPO, "--quant", "Q2_K"))
    assert "no Q2_K GGUF file" in line and "F16, Q4_K_M, Q8_0" in line


def test_download_checkpoint_fetches_only_what_conversion_needs(online_hub, ckpt_files):
    folder = pull.download_checkpoint(CKPT_REPO)
    assert online_hub.served(CKPT_REPO) == set(ckpt_files)
    for name, data in ckpt_files.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "modeling_llama.py").exists() and not (folder / "pytorch_model.bin").exists()
    sha = online_hub.repos[CKPT_REPO].sha
    assert hub.checkpoint_source(folder) == (CKPT_REPO, sha) and sha[:12] in folder.name


def test_hub_errors_are_one_line(online_hub):
    assert "not found on the hub" in one_error_line(run("pull", "nobody/nothing"))
    assert "revision 'v9' not found" in one_error_line(run("pull", GGUF_REPO, "--revision", "v9"))
    assert "neither a known model" in one_error_line(run("pull", "not a repo"))


def test_offline_pull_says_what_to_do_instead():
    """conftest sets HF_HUB_OFFLINE=1."""
    line = one_error_line(run("pull", "mentallama-7b"))
    assert "klyang/MentaLLaMA-chat-7B" in line and "HF_HUB_OFFLINE" in line
    assert "mental-edge convert /local/copy -o x.gguf" in line and "mental-edge import x.gguf" in line
    with pytest.raises(MentalEdgeError, match="mental-edge import"):
        pull.download_checkpoint(CKPT_REPO)


def test_unreachable_hub_says_what_to_do_instead(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    go_online(monkeypatch, f"http://127.0.0.1:{port}")
    line = one_error_line(run("pull", "mentalglm-chat", "--quant", "Q8_0"))
    assert "zwzzz/MentalGLM-chat (no connection)" in line and "mental-edge import x.gguf" in line


@pytest.mark.parametrize(
    "files, expected",
    [
        (
            ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.model"],
            ["config.json", "tokenizer.model", "model.safetensors"],
        ),
        (
            [
                "config.json",
                "pytorch_model-00002-of-00002.bin",
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model.bin.index.json",
                "training_args.bin",
                "tokenizer.model",
                "configuration_x.py",
            ],
            [
                "config.json",
                "tokenizer.model",
                "pytorch_model.bin.index.json",
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin",
            ],
        ),
        (
            ["config.json", "spiece.model", "model.safetensors", "original/consolidated.00.pth", "flax_model.msgpack"],
            ["config.json", "spiece.model", "model.safetensors"],
        ),
    ],
)
def test_checkpoint_file_choice(files, expected):
    assert hub.checkpoint_files(hub.RepoListing("o/r", "0" * 40, tuple(files))) == expected


def test_checkpoint_without_weights_or_config_is_refused():
    with pytest.raises(MentalEdgeError, match="holds no model"):
        hub.checkpoint_files(hub.RepoListing("o/r", "0" * 40, ("config.json", "README.md")))
    with pytest.raises(MentalEdgeError, match="no config.json"):
        hub.checkpoint_files(hub.RepoListing("o/r", "0" * 40, ("model.safetensors",)))


def test_gguf_choice_by_name():
    listing = hub.RepoListing(
        "o/r",
        "0" * 40,
        (
            "m.Q4_K.gguf",
            "m.Q4_K_S.gguf",
            "m.Q5_K_M.gguf",
            "mmproj-f16.gguf",
            "m.f16-00001-of-00002.gguf",
            "m.f16-00002-of-00002.gguf",
        ),
    )
    assert hub.choose_gguf(listing, None)[0] == ["m.Q5_K_M.gguf"]  # no Q4_K_M: next preference
    assert hub.choose_gguf(listing, "q4_k")[0] == ["m.Q4_K.gguf"]
    assert hub.choose_gguf(listing, "F16")[0] == ["m.f16-00001-of-00002.gguf", "m.f16-00002-of-00002.gguf"]


def tiny_llama_files(smollm2_hf_checkpoint) -> dict[str, bytes]:
    """A tiny random LLaMA (hidden 64, 2 layers) with SmolLM2's real tokenizer files, in two safetensors shards."""
    from safetensors.numpy import save

    config = json.loads((smollm2_hf_checkpoint / "config.json").read_text())
    config.update(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
    )
    shapes = llama_shapes(config, lm_head=False)
    rng = np.random.default_rng(0)
    tensors = {k: (rng.standard_normal(s) * 0.05).astype(np.float16) for k, s in shapes.items()}
    names = sorted(tensors)
    shards = {f"model-0000{n}-of-00002.safetensors": names[n - 1 :: 2] for n in (1, 2)}
    files = {shard: save({k: tensors[k] for k in part}) for shard, part in shards.items()}
    weight_map = {k: shard for shard, part in shards.items() for k in part}
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    files["config.json"] = json.dumps(config).encode()
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        files[name] = (smollm2_hf_checkpoint / name).read_bytes()
    return files


@pytest.mark.slow
def test_pull_short_name_downloads_converts_quantizes_and_registers(smollm2_hf_checkpoint, monkeypatch):
    """`pull mentallama-7b` against a stand-in of klyang/MentaLLaMA-chat-7B holding a tiny checkpoint."""
    from gguf import GGUFReader

    needed = tiny_llama_files(smollm2_hf_checkpoint)
    repo = FakeRepo({**needed, **NOT_NEEDED})
    with HubStandIn({"klyang/MentaLLaMA-chat-7B": repo}) as server:
        go_online(monkeypatch, server.url)
        result = run("pull", "mentallama-7b")
    assert result.exit_code == 0, result.output
    # never *.py, the .bin twin, optimizer states or other exports
    assert server.served("klyang/MentaLLaMA-chat-7B") == set(needed)

    entry = store.find_model("mentallama-7b")  # the model's default quant
    assert (entry.name, entry.architecture, entry.quant) == ("mentallama-7b-q4_k_m", "llama", "Q4_K_M")
    assert (entry.source, entry.revision) == ("klyang/MentaLLaMA-chat-7B", repo.sha)
    reader = GGUFReader(store.resolve_model("mentallama-7b"))
    assert reader.get_field("general.source.revision").contents() == repo.sha
    assert reader.get_field("llama.embedding_length").contents() == 64
    assert list(store.downloads_dir().iterdir()) == []  # the checkpoint is not kept
    assert "[1/" in result.output  # per-tensor progress


# The real repos' file lists (field notes, "What the real repos hold"); tests/test_pull_real_repos.py pulls them.
_LLAMA_13B = [f"pytorch_model-0000{k}-of-00006.bin" for k in range(1, 7)]
_GLM_SHARDS = [f"model-{k:05d}-of-00010.safetensors" for k in range(1, 11)]
_CARD = [".gitattributes", "README.md"]


@pytest.mark.parametrize(
    "files, fetched",
    [
        (  # klyang/MentaLLaMA-chat-13B
            _CARD
            + ["config.json", "generation_config.json", "pytorch_model.bin.index.json", *_LLAMA_13B]
            + ["special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"],
            ["config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"]
            + ["special_tokens_map.json", "pytorch_model.bin.index.json", *_LLAMA_13B],
        ),
        (  # Tianlin668/MentalBART
            _CARD
            + ["config.json", "generation_config.json", "merges.txt", "pytorch_model.bin"]
            + ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "trainer_state.json"]
            + ["training_args.bin"],
            ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
            + ["special_tokens_map.json", "merges.txt", "pytorch_model.bin"],
        ),
        (  # Tianlin668/MentalT5
            _CARD + ["config.json", "pytorch_model.bin", "spiece.model"],
            ["config.json", "spiece.model", "pytorch_model.bin"],
        ),
        (  # zwzzz/MentalGLM-chat
            _CARD
            + ["config.json", "configuration_chatglm.py", "added_tokens.json", "generation_config.json"]
            + ["model.safetensors.index.json", *_GLM_SHARDS, "tokenization_chatglm.py", "tokenizer.model"]
            + ["tokenizer_config.json"],
            ["config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"]
            + ["added_tokens.json", "model.safetensors.index.json", *_GLM_SHARDS],
        ),
    ],
)
def test_real_repo_file_lists_fetch_only_data(files, fetched):
    listing = hub.RepoListing("o/r", "0" * 40, tuple(files))
    assert hub.checkpoint_files(listing) == fetched
    assert hub.has_tokenizer(fetched)


def test_a_repo_without_tokenizer_files_is_named_in_one_line():
    listing = hub.RepoListing("zwzzz/MentalGLM", "0" * 40, ("config.json", "added_tokens.json", *_GLM_SHARDS))
    assert not hub.has_tokenizer(hub.checkpoint_files(listing))
    with pytest.raises(MentalEdgeError) as err:
        hub.tokenizer_files(listing)
    assert str(err.value) == (
        "zwzzz/MentalGLM has no tokenizer files (looked for tokenizer.model, spiece.model, tokenizer.json, "
        "vocab.json + merges.txt): give its base model's tokenizer with --tokenizer-from FOLDER|REPO"
    )
    assert hub.has_tokenizer(["vocab.json", "merges.txt"]) and not hub.has_tokenizer(["merges.txt"])


def test_tokenizer_from_a_repo_fetches_only_its_tokenizer_files(monkeypatch, tmp_path):
    files = {"tokenizer.model": b"spm", "tokenizer_config.json": b"{}", "config.json": b"{}", **NOT_NEEDED}
    with HubStandIn({"base/model": FakeRepo(files), "no/tokenizer": FakeRepo({"config.json": b"{}"})}) as server:
        go_online(monkeypatch, server.url)
        said = []
        folder = pull.tokenizer_folder("base/model", say=said.append)
        assert server.served("base/model") == {"tokenizer.model", "tokenizer_config.json"}
        assert said == [
            f"taking the tokenizer of base/model at {server.repos['base/model'].sha[:12]}: "
            "tokenizer.model, tokenizer_config.json"
        ]
        assert (folder / "tokenizer.model").read_bytes() == b"spm"
        with pytest.raises(MentalEdgeError, match="no/tokenizer has no tokenizer files"):
            pull.tokenizer_folder("no/tokenizer")
    assert pull.tokenizer_folder(str(folder)) == folder  # a local folder is taken as it is
    with pytest.raises(MentalEdgeError, match=f"{tmp_path} has no tokenizer files"):
        pull.tokenizer_folder(str(tmp_path))
    with pytest.raises(MentalEdgeError, match="neither a folder nor a hub repo id"):
        pull.tokenizer_folder("./missing/folder/x")


def test_convert_of_a_hub_repo_without_tokenizer_is_refused_before_any_download(monkeypatch, tmp_path):
    files = {"config.json": b"{}", "model.safetensors": b"weights", **_CARD_FILES}
    with HubStandIn({"ft/no-tokenizer": FakeRepo(files)}) as server:
        go_online(monkeypatch, server.url)
        line = one_error_line(run("convert", "ft/no-tokenizer", "-o", str(tmp_path / "x.gguf")))
    assert line.startswith("Error: ft/no-tokenizer has no tokenizer files") and "--tokenizer-from" in line
    assert not [p for _, p in server.requests if "/resolve/" in p]


_CARD_FILES = {name: b"card" for name in _CARD}
