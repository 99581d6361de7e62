"""The local model store: import, models, rm through the CLI; resolve_model; bad files."""

import hashlib
import json
import os
import stat

import pytest
from gguf import LlamaFileType
from support.cli import one_error_line, run
from support.gguf_tiny import write_tiny_gguf

from mental_edge import store
from mental_edge.errors import MentalEdgeError


def test_import_list_resolve_remove_real_model(smollm2_gguf, isolated_home):
    result = run("import", str(smollm2_gguf), "--name", "smollm2")
    assert result.exit_code == 0, result.output

    entry = store.list_models()[0]
    expected_sha = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert (entry.name, entry.architecture, entry.quant) == ("smollm2", "llama", "Q4_1")
    assert entry.sha256 == expected_sha and entry.size == smollm2_gguf.stat().st_size
    assert entry.source == str(smollm2_gguf.resolve())

    path = store.resolve_model("smollm2")
    assert path.parent == isolated_home / "models" and path.read_bytes()[:4] == b"GGUF"
    assert os.path.samefile(path, store.resolve_model(str(path)))

    table = run("models").output.splitlines()
    assert table[0].split() == ["NAME", "ARCHITECTURE", "QUANT", "SIZE", "SHA256", "SOURCE", "REVISION", "VERIFIED"]
    assert table[1].split()[-1] == "-"  # never checked by pull --verify
    assert table[1].split()[:3] == ["smollm2", "llama", "Q4_1"] and expected_sha[:12] in table[1]
    assert run("models", "ls").output == run("models").output

    assert run("models", "rm", "smollm2").exit_code == 0
    assert not path.exists() and store.list_models() == []
    assert "nothing" in one_error_line(run("models", "rm", "smollm2"))
    assert "empty" in run("models").output


def test_store_is_owner_only_and_registry_is_json(tmp_path, isolated_home):
    store.import_model(write_tiny_gguf(tmp_path / "Tiny Model.Q4_K_M.gguf"))
    assert stat.S_IMODE(isolated_home.stat().st_mode) == 0o700
    registry = isolated_home / "models.json"
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600
    rows = json.loads(registry.read_text())["models"]
    assert [r["name"] for r in rows] == ["tiny-model.q4_k_m"] and rows[0]["quant"] == "Q4_K_M"
    assert not [p for p in isolated_home.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda data: b"NOPE" + data[4:], "not a GGUF file"),
        (lambda data: data[:-100], "not a readable GGUF"),
        (lambda data: data[:60], "not a readable GGUF"),
        (lambda data: data[:4] + b"\xff" * 40 + data[44:], "not a readable GGUF"),
    ],
)
def test_corrupt_gguf_import_is_one_line_naming_the_file(tmp_path, damage, expected):
    good = write_tiny_gguf(tmp_path / "good.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(good.read_bytes()))
    line = one_error_line(run("import", str(bad)))
    assert str(bad) in line and expected in line
    assert store.list_models() == [] and list(store.models_dir().iterdir()) == []


def test_truncated_tensor_data_is_refused(tmp_path):
    """A file cut inside its last tensor still parses; the size check catches it."""
    good = write_tiny_gguf(tmp_path / "good.gguf")
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(MentalEdgeError, match=r"cut\.gguf (is truncated|is not a readable)"):
        store.import_model(bad)


def test_import_refuses_duplicate_and_bad_names(tmp_path):
    f = write_tiny_gguf(tmp_path / "m.gguf")
    assert run("import", str(f), "--name", "one").exit_code == 0
    assert "already holds 'one'" in one_error_line(run("import", str(f), "--name", "one"))
    assert "not allowed" in one_error_line(run("import", str(f), "--name", "../evil"))
    assert "no such file" in one_error_line(run("import", str(tmp_path / "missing.gguf")))
    assert [e.name for e in store.list_models()] == ["one"]


def test_resolve_model_by_stem_and_its_errors(tmp_path, monkeypatch):
    q4 = store.import_model(write_tiny_gguf(tmp_path / "a.gguf"), name="mentallama-7b-q4_k_m")
    assert store.resolve_model("mentallama-7b") == store.model_path(q4)

    store.import_model(write_tiny_gguf(tmp_path / "b.gguf", LlamaFileType.MOSTLY_Q8_0), name="mentallama-7b-q8_0")
    with pytest.raises(MentalEdgeError, match="matches several models.*mentallama-7b-q4_k_m, mentallama-7b-q8_0"):
        store.resolve_model("mentallama-7b")
    assert store.resolve_model("mentallama-7b-q8_0").name == "mentallama-7b-q8_0.gguf"

    with pytest.raises(MentalEdgeError) as info:
        store.resolve_model("mentalglm")
    message = str(info.value)
    assert "\n" not in message and "mentallama-7b-q4_k_m, mentallama-7b-q8_0" in message
    assert "mental-edge pull" in message and "mental-edge import" in message

    local = write_tiny_gguf(tmp_path / "mentallama-7b-q8_0")  # a path of the same name wins
    monkeypatch.chdir(tmp_path)
    assert store.resolve_model("mentallama-7b-q8_0") == local.relative_to(tmp_path)


def test_resolve_reports_a_lost_file_and_a_damaged_registry(tmp_path, isolated_home):
    entry = store.import_model(write_tiny_gguf(tmp_path / "m.gguf"), name="m")
    store.model_path(entry).unlink()
    with pytest.raises(MentalEdgeError, match="lost its file"):
        store.resolve_model("m")
    (isolated_home / "models.json").write_text("{not json")
    line = one_error_line(run("models"))
    assert "models.json" in line and "damaged" in line


def test_import_copies_when_it_cannot_link(tmp_path, monkeypatch):
    def no_link(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    src = write_tiny_gguf(tmp_path / "m.gguf")
    path = store.model_path(store.import_model(src))
    assert path.read_bytes() == src.read_bytes() and not os.path.samefile(path, src)


def test_ctranslate2_folder_imports_and_a_plain_folder_is_refused(tmp_path):
    model = tmp_path / "mentalbart-int8"
    model.mkdir()
    (model / "model.bin").write_bytes(b"weights" * 100)
    (model / "config.json").write_text("{}")
    entry = store.import_model(model)
    assert (entry.name, entry.architecture, entry.size) == ("mentalbart-int8", "ctranslate2", 702)
    assert entry.sha256 == hashlib.sha256(b"weights" * 100).hexdigest()
    assert (store.resolve_model("mentalbart") / "config.json").read_text() == "{}"

    (tmp_path / "empty").mkdir()
    assert "without model.bin" in one_error_line(run("import", str(tmp_path / "empty")))


def test_concurrent_registrations_lose_nothing(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    f = write_tiny_gguf(tmp_path / "m.gguf")
    base = store.describe(f, "x", source="test")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store.register(base.__class__(**{**base.__dict__, "name": f"m{i}"})), range(40)))
    assert len(store.list_models()) == 40
