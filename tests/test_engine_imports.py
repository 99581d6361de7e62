"""The engine package keeps its own rules (pure Python, no model): imports inside engine/ form no cycle, lazy
imports included; the batcher, the server and the T5 engine use the decoder-only engine's public interface only."""

import ast
from pathlib import Path

from mental_edge.engine.base import Engine
from mental_edge.engine.llamacpp.common import LlamaCppEngine
from mental_edge.engine.llamacpp.decoder import LlamaEngine
from mental_edge.engine.llamacpp.t5 import LlamaT5Engine

PACKAGE = Path(__file__).resolve().parents[1] / "mental_edge"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from X import ...` in the file, inside functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.module, [a.name for a in n.names]) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]


def test_no_import_cycle_inside_the_engine_package():
    graph = {}
    for path in (PACKAGE / "engine").rglob("*.py"):
        name = "mental_edge." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        graph[name] = {m for m, _ in _imports(path) if m.startswith("mental_edge.engine.") and m != name}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_no_private_name_crosses_a_module_boundary_in_the_engine_and_server():
    for path in [*(PACKAGE / "engine").rglob("*.py"), *(PACKAGE / "serve").glob("*.py")]:
        for module, names in _imports(path):
            if module.startswith("mental_edge."):
                assert not [n for n in names if n.startswith("_")], (path.name, module, names)


def test_the_batcher_touches_no_private_member_of_the_engine():
    tree = ast.parse((PACKAGE / "engine" / "llamacpp" / "batcher.py").read_text(encoding="utf-8"))
    private = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "e"  # self.e is the engine
    ]
    assert private == []


def test_the_t5_engine_is_no_decoder_only_engine_and_runs_one_request_at_a_time():
    assert not issubclass(LlamaT5Engine, LlamaEngine) and issubclass(LlamaT5Engine, LlamaCppEngine)
    assert LlamaT5Engine.run_requests is Engine.run_requests and LlamaT5Engine.batch_runner is Engine.batch_runner


def test_the_server_asks_the_engine_instead_of_sniffing_attributes():
    text = (PACKAGE / "serve" / "worker.py").read_text(encoding="utf-8")
    assert "hasattr(" not in text and "llama_batch" not in text and "batch_runner()" in text
