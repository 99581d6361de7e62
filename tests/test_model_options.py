"""Every command that loads a model takes the one set of model options (cli/options.py's `model_options`):
-m/--model, --threads, --gpu-layers, --ctx, and --slots/--sequential where requests run side by side. Run
through the CLI on the fast tier's FakeEngine; what reaches the engine loader is recorded and compared."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from support.imhi import imhi_subset

from mental_edge.api.loading import engine_loader
from mental_edge.cli import main

OPTIONS = ["--threads", "2", "--gpu-layers", "0", "--ctx", "128"]
LOADED = {"n_ctx": 128, "threads": 2, "gpu_layers": 0}


@pytest.fixture
def loads(fake_models):
    """The keywords of each model load the CLI makes, in order (each still opens a FakeEngine)."""
    seen: list[dict] = []

    def load(path, **kwargs):
        seen.append({"path": str(path), **kwargs})
        return fake_models.load(path, **kwargs)

    with engine_loader(load):
        yield seen


def _commands(tmp_path, imhi_dir):
    """(command line after the model options, whether it takes --slots)."""
    return {
        "analyze": (["analyze", "--task", "DR", "--no-explain", "I feel fine today."], True),
        "eval": (
            ["eval", "--data", imhi_subset(imhi_dir, tmp_path / "data", rows=2), "--report", tmp_path / "report"],
            True,
        ),
        "generate": (["generate", "--max-tokens", "3", "Once upon a time"], False),
        "prompt": (["prompt", "--task", "DR", "I feel fine today."], False),
        "chat": (["chat", "--no-history"], False),
        "serve": (["serve", "--port", "0"], True),
    }


def _invoke(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture
def served(monkeypatch):
    """`serve` opens its engine and returns at once, instead of listening."""
    opened = []

    def serve(engine_opener, **_):
        opened.append(engine_opener())

    monkeypatch.setattr("mental_edge.serve.serve", serve)
    return opened


@pytest.mark.parametrize("command", ["analyze", "eval", "generate", "prompt", "chat", "serve"])
@pytest.mark.parametrize("model_flag", ["-m", "--model"])
def test_each_command_takes_the_model_options(command, model_flag, loads, fake_models, served, tmp_path, imhi_dir):
    args, takes_slots = _commands(tmp_path, imhi_dir)[command]
    slots = ["--slots", "3"] if takes_slots else []
    result = _invoke([args[0], model_flag, fake_models.path, *OPTIONS, *slots, *args[1:]], input="hello\n")
    assert result.exit_code == 0, result.output
    (load,) = loads
    assert load["path"] == str(fake_models.path)
    assert {k: load[k] for k in LOADED} == LOADED
    if takes_slots:
        assert load["slots"] == 3
    if command == "chat":  # a conversation is one sequence; the model was asked to answer the line typed
        assert load["slots"] == 1
        assert any(kind == "generate" and "hello" in text for kind, text, _ in fake_models.last.calls)


@pytest.mark.parametrize("command", ["analyze", "eval", "serve"])
def test_sequential_is_one_slot(command, loads, fake_models, served, tmp_path, imhi_dir):
    args, _ = _commands(tmp_path, imhi_dir)[command]
    result = _invoke([args[0], "-m", fake_models.path, "--sequential", *args[1:]])
    assert result.exit_code == 0, result.output
    assert loads[0]["slots"] == 1


@pytest.mark.parametrize("command", ["generate", "prompt", "chat"])
def test_commands_that_run_one_sequence_refuse_slots(command, fake_models, tmp_path, imhi_dir):
    args, _ = _commands(tmp_path, imhi_dir)[command]
    result = _invoke([args[0], "-m", fake_models.path, "--slots", "2", *args[1:]])
    assert result.exit_code == 2 and "No such option '--slots'" in result.output


def test_the_model_options_are_declared_once():
    """The same option, with the same help, on every command that loads a model."""
    helps = {}
    for name in ("analyze", "eval", "generate", "prompt", "chat", "serve"):
        command = main.commands[name]
        helps[name] = {p.name: (tuple(p.opts), p.help) for p in command.params if p.name in LOADED or p.name == "model"}
    first = helps["analyze"]
    assert set(first) == {"model", "n_ctx", "threads", "gpu_layers"}
    assert first["model"][0] == ("--model", "-m")
    assert all(h == first for h in helps.values())
