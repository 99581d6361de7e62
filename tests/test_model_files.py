"""Model files from anywhere (docs/model-files.md): the allow-list of architectures, the structural check before
llama.cpp reads a file (the five failures measured in issue 23 among its cases), store entries whose file changed,
and the CTranslate2 folder check. The fuzz test is tests/test_model_file_fuzz.py."""

from __future__ import annotations

import json
import os
import struct

import gguf
import pytest
from support.cli import one_error_line, run
from support.gguf_fuzz import Case, FuzzRun, value_offset
from support.gguf_tiny import write_tiny_gguf

from mental_edge import store
from mental_edge.engine import load_engine
from mental_edge.engine.ct2_check import check_ct2_folder
from mental_edge.engine.file_check import check_model_file
from mental_edge.errors import MentalEdgeError

POST = ("--task", "DR", "--no-explain", "I feel tired all the time.")


@pytest.fixture(scope="module")
def smol(smollm2_gguf, tmp_path_factory):
    """A working copy of SmolLM2 patched case by case (restored after each), and gguf's reader of the original."""
    fuzz = FuzzRun(smollm2_gguf, tmp_path_factory.mktemp("smol") / "smol.gguf")
    yield fuzz, gguf.GGUFReader(smollm2_gguf)
    fuzz.close()


MEASURED = [  # issue 23: two aborts, a hang, a MemoryError traceback, a ValueError traceback
    ("llama.block_count", "<I", 0),
    ("llama.block_count", "<I", 2**31 - 1),
    ("llama.context_length", "<I", 2**31 - 1),
    ("llama.context_length", "<I", 0),
    ("general.architecture", "<Q", 2**62),  # the string's length
]


@pytest.mark.parametrize(("key", "fmt", "value"), MEASURED, ids=[f"{k}={v}" for k, _, v in MEASURED])
def test_the_measured_failures_are_refused_in_one_line(smol, key, fmt, value):
    fuzz, reader = smol
    with fuzz.applied(Case(key, [(value_offset(reader, key), struct.pack(fmt, value))])) as path:
        result = run("analyze", "-m", path, "--threads", "1", *POST)
    one_error_line(result, str(path), key)


def _renamed(reader, arch: bytes) -> Case:
    """SmolLM2 as another architecture of the same name length: general.architecture and every `llama.` key."""
    patches = []
    for key, f in reader.fields.items():
        if key.startswith("llama."):
            patches.append((f.offset + 8, arch))  # the key's text starts after its 8-byte length
    value = reader.fields["general.architecture"]
    patches.append((value.offset + 8 + len("general.architecture") + 4 + 8, arch))
    return Case(f"renamed {arch}", patches)


def test_an_architecture_outside_the_families_runs_only_when_named(smol):
    fuzz, reader = smol
    with fuzz.applied(_renamed(reader, b"qwen2")) as path:
        refused = one_error_line(run("analyze", "-m", path, "--threads", "1", *POST), str(path), "'qwen2'")
        assert "--allow-architecture qwen2" in refused
        assert check_model_file(path, ["qwen2"]) == "qwen2"  # named: the check passes it to llama.cpp
        named = run("analyze", "-m", path, "--threads", "1", "--allow-architecture", "qwen2", *POST)
        assert named.exit_code == 0 and "DR: " in named.output, named.output  # llama.cpp's qwen2 runs it


def test_the_architectures_named_are_recorded_in_every_record(smollm2_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("MENTAL_EDGE_ALLOW_ARCHITECTURES", "gemma, qwen2")
    out = tmp_path / "out.jsonl"
    result = run("analyze", "-m", smollm2_gguf, "--threads", "1", "--allow-architecture", "phi3", "-o", out, *POST)
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["run"]["allow_architectures"] == ["gemma", "phi3", "qwen2"]


def test_the_check_reads_no_tensor_data(smol, monkeypatch):
    """Every read the check makes lies before the data section."""
    fuzz, reader = smol
    reads = []
    real_open = open

    def spying_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        if "b" in mode:
            real_read = fh.read

            def read(n=-1):
                reads.append((fh.tell(), n))
                return real_read(n)

            fh.read = read
        return fh

    monkeypatch.setattr("builtins.open", spying_open)
    check_model_file(fuzz.base)
    monkeypatch.undo()
    assert reads and max(start for start, _ in reads) < reader.data_offset


def test_a_file_without_the_hyperparameters_its_family_needs_never_reaches_llama_cpp(tmp_path, monkeypatch):
    """gguf_tiny's file is a well-formed GGUF of architecture llama with two tensors and no hyperparameters."""
    monkeypatch.setattr("mental_edge.engine.llamacpp.decoder.LlamaEngine", None)  # would fail if reached
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(MentalEdgeError, match=r"tiny\.gguf: llama\.block_count is missing"):
        load_engine(path)


# ---------------------------------------------------------------- the store


@pytest.fixture
def imported(tmp_path):
    return store.import_model(write_tiny_gguf(tmp_path / "tiny.gguf"), name="tiny")


def test_a_store_file_changed_in_place_is_one_line_saying_how_to_reimport(imported):
    path = store.model_path(imported)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    with pytest.raises(MentalEdgeError) as caught:
        store.check_unchanged(imported)
    message = str(caught.value)
    assert "changed since it entered the store" in message and "\n" not in message
    assert f"models rm {imported.name}" in message and "mental-edge import" in message
    result = run("generate", "-m", "tiny", "--threads", "1", "hello")
    one_error_line(result, "'tiny'", "changed since it entered the store")
    listed = run("models")
    assert listed.exit_code == 0 and "tiny" in listed.stdout and "changed since" in listed.stderr


def test_a_store_file_touched_but_unchanged_is_rehashed_once(imported):
    path = store.model_path(imported)
    os.utime(path, (imported.mtime + 100, imported.mtime + 100))
    again = store.check_unchanged(imported)
    assert again.sha256 == imported.sha256 and again.mtime == imported.mtime + 100
    assert store.get_model("tiny").mtime == again.mtime  # the registry keeps the new mtime: no hash next time


def test_an_entry_from_before_mtimes_were_kept_is_hashed_and_then_remembered(imported):
    old = store.ModelEntry.from_dict({k: v for k, v in imported.__dict__.items() if k != "mtime"})
    assert old.mtime is None
    assert store.check_unchanged(old).mtime == store.model_path(imported).stat().st_mtime


# ---------------------------------------------------------------- CTranslate2 folders


def _ct2_folder(folder, *, variables=((b"w", [2, 3], 0, 24),), spec=b"TransformerSpec", tail=b""):
    """A hand-written CTranslate2 folder: model.bin's layout as CTranslate2's spec writer makes it."""
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "shared_vocabulary.json").write_text('["<s>", "</s>"]')

    def string(raw):
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    body = struct.pack("<I", 6) + string(spec) + struct.pack("<II", 1, len(variables))
    for name, dims, type_id, n_bytes in variables:
        body += string(name) + struct.pack("<B", len(dims)) + b"".join(struct.pack("<I", d) for d in dims)
        body += struct.pack("<BI", type_id, n_bytes) + b"\0" * min(n_bytes, 24)
    (folder / "model.bin").write_bytes(body + struct.pack("<I", 0) + tail)
    return folder


def test_a_whole_ct2_folder_passes(tmp_path):
    check_ct2_folder(_ct2_folder(tmp_path / "m"))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ({"variables": ((b"w", [2, 3], 0, 20),)}, "holds 20 bytes for its shape [2, 3]"),
        ({"variables": ((b"w", [1 << 20, 1 << 20], 0, 0),)}, "holds 0 bytes"),
        ({"variables": ((b"w", [2, 3], 9, 24),)}, "unknown type 9"),
        ({"variables": ((b"w", [8, 8], 0, 256),)}, "runs past the end"),
        ({"spec": b"WhisperSpec"}, "'WhisperSpec'"),
        ({"tail": b"\0\0"}, "2 bytes after its last entry"),
    ],
)
def test_a_damaged_ct2_model_bin_is_one_line(tmp_path, damage, words):
    folder = _ct2_folder(tmp_path / "m", **damage)
    with pytest.raises(MentalEdgeError, match="model.bin") as caught:
        check_ct2_folder(folder)
    assert words in str(caught.value) and str(folder) in str(caught.value)


def test_ct2_config_and_vocabulary_are_parsed_with_bounds(tmp_path):
    folder = _ct2_folder(tmp_path / "m")
    (folder / "shared_vocabulary.json").write_text('{"not": "a list"}')
    with pytest.raises(MentalEdgeError, match="shared_vocabulary.json is not a JSON list"):
        check_ct2_folder(folder)
    (folder / "config.json").write_text("[" * 100000)
    with pytest.raises(MentalEdgeError, match="config.json is not valid JSON"):
        check_ct2_folder(folder)


def test_a_t5_files_declared_context_is_sized_not_taken():
    """The T5 engine's context: --ctx or 2,048, at most the training context, at most the cells memory holds."""
    from mental_edge.engine.sizing import seq2seq_context

    assert seq2seq_context(requested=None, n_ctx_train=512, per_token=1024, available=8 << 30) == 512
    assert seq2seq_context(requested=None, n_ctx_train=1 << 20, per_token=1024, available=8 << 30) == 2048
    assert seq2seq_context(requested=300, n_ctx_train=512, per_token=1024, available=None) == 300
    budget = int(((2 << 30) - (1 << 30)) * 0.5)  # half of what 2 GiB leaves after the 1 GiB reserve
    assert seq2seq_context(requested=1 << 20, n_ctx_train=1 << 20, per_token=1 << 20, available=2 << 30) == budget >> 20
