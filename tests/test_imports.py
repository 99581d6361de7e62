"""House rules on imports, read from the source with `ast` (no module is imported, no model loaded):

- no import cycle among the modules of mental_edge/ and convert/ (imports inside functions count: a lazy import
  only hides a cycle until the function runs);
- no module uses another module's `_private` names (`from X import _name`, `X._name`);
- imports point down the floors of docs/architecture.md, written here as FLOORS (keep the two equal: a test
  reads the doc's floor line back).

Cycles and private names that other engineers are fixing are listed in KNOWN_CYCLES and KNOWN_PRIVATE with their
owner; while one is open its test is an expected failure. Remove an entry when its fix is in.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"mental_edge": ROOT / "mental_edge", "mental_edge.convert": ROOT / "convert"}

# docs/architecture.md's floors, top to bottom: a module imports modules on lower floors, or on its own floor
# (without a cycle). Names are modules below mental_edge/ ("convert" is mental_edge.convert and all inside it; a
# package stands for its modules, which import each other freely, cycles aside).
FLOORS: list[list[str]] = [
    ["cli", "__main__", "__init__"],
    ["chat", "serve"],
    ["api", "distributed", "ray_auth"],
    ["verification"],
    ["analysis", "scoring", "store", "doctor"],
    ["prompting", "report"],
    ["families", "engine", "io", "convert"],
    ["errors", "version"],
]

# Open when this was written and fixed by their owners: remove an entry when its fix is in. A listed problem
# makes its test an expected failure (once the rest is clean); a fixed one that is still listed no longer does.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}  # the cycle's modules -> owner
KNOWN_PRIVATE: dict[tuple[str, str, str], str] = {}  # (module, the module it reaches into, name) -> owner


@dataclass(frozen=True)
class Use:
    module: str  # the importing module
    target: str  # the module imported
    line: int
    name: str | None = None  # the name taken from it, when one is


def module_files() -> dict[str, Path]:
    """Every module under mental_edge/ and convert/, by dotted name (packages by their own name)."""
    out = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if package == "mental_edge" and name.startswith("mental_edge.convert"):
                continue  # no such folder in the tree; the mapping puts convert/ there
            out[name] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of a (possibly relative) `from` import in `module`."""
    if not level:
        return name or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def uses(module: str, path: Path, modules: set[str]) -> list[Use]:
    """What `module` imports from the project's modules, and the names it takes from them, wherever in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[Use] = []
    aliases: dict[str, str] = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    out.append(Use(module, alias.name, node.lineno))
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node.level, node.module)
            if source not in modules:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:  # a submodule
                    out.append(Use(module, sub, node.lineno))
                    aliases[alias.asname or alias.name] = sub
                else:
                    out.append(Use(module, source, node.lineno, alias.name))
    for node in ast.walk(tree):  # X._name on an imported module X (or a dotted chain naming one)
        if isinstance(node, ast.Attribute) and _private(node.attr):
            target = aliases.get(_dotted(node.value) or "") or _dotted(node.value)
            if target in modules and target != module:
                out.append(Use(module, target, node.lineno, node.attr))
    return out


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def graph() -> tuple[dict[str, set[str]], list[Use]]:
    files = module_files()
    names = set(files)
    all_uses = [u for m, p in files.items() for u in uses(m, p, names)]
    edges: dict[str, set[str]] = {m: set() for m in names}
    for u in all_uses:
        if u.target != u.module:
            edges[u.module].add(u.target)
    return edges, all_uses


def cycles(edges: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def floor_of(module: str) -> int:
    """The floor of a module: that of the longest FLOORS name it is or lies under."""
    rest = module.removeprefix("mental_edge").removeprefix(".") or "__init__"
    best = None
    for level, names in enumerate(FLOORS):
        for name in names:
            if (rest == name or rest.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (level, name)
    if best is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS and docs/architecture.md")
    return best[0]


def _unit(module: str) -> str:
    """A module's place in FLOORS: imports inside one unit (a package such as engine/) may go either way."""
    rest = module.removeprefix("mental_edge").removeprefix(".") or "__init__"
    return rest.split(".")[0]


# -- tests ------------------------------------------------------------------------------------------------------


def test_the_reader_sees_lazy_relative_and_attribute_imports(tmp_path):
    """The checks below can fail: imports inside functions, relative ones and `X._name` are all seen."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n    return b._hidden\n")
    (pkg / "b.py").write_text("import pkg.a as alias\nfrom pkg.a import f as _f\nfrom .a import _g\nalias._h()\n")
    names = {"pkg", "pkg.a", "pkg.b"}
    got = uses("pkg.a", pkg / "a.py", names) + uses("pkg.b", pkg / "b.py", names)
    assert {(u.module, u.target, u.name) for u in got} == {
        ("pkg.a", "pkg.b", None),
        ("pkg.a", "pkg.b", "_hidden"),
        ("pkg.b", "pkg.a", None),
        ("pkg.b", "pkg.a", "f"),  # a public name bound to a private alias is fine
        ("pkg.b", "pkg.a", "_g"),
        ("pkg.b", "pkg.a", "_h"),
    }
    assert cycles({"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}) == [("pkg.a", "pkg.b")]
    assert cycles({"x": {"y"}, "y": {"z"}, "z": set()}) == []


def test_every_module_is_read_and_on_a_floor():
    files = module_files()
    assert {"mental_edge.engine.base", "mental_edge.convert.arch.t5", "mental_edge.families.llama"} <= set(files)
    for module in files:
        floor_of(module)  # raises for a module on no floor


def test_no_import_cycle():
    edges, _ = graph()
    found = cycles(edges)
    open_ = [c for c in found if c not in KNOWN_CYCLES]
    assert not open_, "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in open_)
    _xfail_if_open([KNOWN_CYCLES[c] + ": " + " <-> ".join(c) for c in found])


def test_no_private_name_of_another_module():
    _, all_uses = graph()
    found = sorted({(u.module, u.target, u.name): u for u in all_uses if u.name and _private(u.name)}.items())
    open_ = [f"{u.module} line {u.line}: {u.target}.{u.name}" for key, u in found if key not in KNOWN_PRIVATE]
    assert not open_, "private names of other modules:\n" + "\n".join(open_)
    _xfail_if_open([f"{KNOWN_PRIVATE[key]}: {u.module} uses {u.target}.{u.name}" for key, u in found])


def test_imports_point_down_the_floors():
    edges, _ = graph()
    in_known_cycle = {m for cycle in KNOWN_CYCLES for m in cycle}
    wrong = [
        f"{m} (floor {floor_of(m) + 1}) imports {t} (floor {floor_of(t) + 1})"
        for m in sorted(edges)
        for t in sorted(edges[m])
        if floor_of(t) < floor_of(m) and _unit(t) != _unit(m) and not {m, t} <= in_known_cycle
    ]
    assert not wrong, "imports pointing up the floors of docs/architecture.md:\n" + "\n".join(wrong)


def test_convert_and_the_runtime_meet_only_in_pull_and_the_cli():
    """convert/ imports nothing of the runtime; of the runtime only `pull` and the CLI import convert/."""
    edges, _ = graph()
    convert = "mental_edge.convert"
    for m in sorted(edges):
        inside = m == convert or m.startswith(convert + ".")
        for t in edges[m]:
            t_inside = t == convert or t.startswith(convert + ".")
            if inside:
                assert t_inside, f"{m} imports {t}: convert/ never imports the runtime"
            elif t_inside:
                assert m == "mental_edge.store.pull" or _unit(m) == "cli", (
                    f"{m} imports {t}: only pull and the CLI call the converter"
                )


def test_floors_are_those_of_the_doc():
    """docs/architecture.md names the same floors, in the same order, as FLOORS."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    match = re.search(r"Floors, top to bottom[^:]*:(.*?)\n\n", doc, re.S)
    assert match, "docs/architecture.md has no 'Floors, top to bottom ...:' paragraph"
    floors = [re.findall(r"`([\w/]+)`", part) for part in match.group(1).split(";")]
    floors = [[name.rstrip("/").replace("/", ".") for name in names] for names in floors if names]
    assert floors == FLOORS


def _xfail_if_open(known_found: list[str]) -> None:
    """Everything else is clean; what is left is others' open work, named with its owner."""
    if known_found:
        pytest.xfail("open, fixed by their owners: " + "; ".join(known_found))


def test_every_package_is_installed():
    """pyproject.toml lists the packages by hand (convert/ and prompts/ are mapped into mental_edge): a package
    left off installs nowhere outside an editable checkout."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mental_edge").rglob("__init__.py")}
    found |= {
        "mental_edge.convert" + "".join("." + x for x in p.parent.relative_to(ROOT / "convert").parts)
        for p in (ROOT / "convert").rglob("__init__.py")
    }
    assert found - listed == set()
