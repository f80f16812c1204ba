"""The shape of the package: no import cycles, and a package root that holds only CLIs and a few shared modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "birdvision"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks: annotations only, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> birdvision modules it imports anywhere (module level or inside functions), except imports
    under ``TYPE_CHECKING`` and imports of a module's own ancestor packages (Python imports those first anyway)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and not mod.startswith(t + "."):
                    edges.add(t)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "birdvision"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from birdvision.data.b import g\n")
    (pkg / "data" / "b.py").write_text("def g():\n    from birdvision.data import a\n")
    (pkg / "data" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from birdvision.data.a import x\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["birdvision.data.a", "birdvision.data.b"]]
    assert "birdvision.data.a" not in graph["birdvision.data.c"]  # annotations only


CLIS = {"audit", "bench", "compare", "evaluate", "export", "fit", "predict", "serve", "shards"}
SHARED = {"__init__", "config", "console", "spec"}  # recipes and options, console output, the preprocessing spec


def test_the_package_root_holds_only_clis_and_shared_modules():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root - CLIS - SHARED == set()


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_every_root_cli_has_a_main(cli):
    tree = ast.parse((PACKAGE / f"{cli}.py").read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


def _config_fields(path: Path):
    """(class.field, first line, last line, line before) of every field of a ``*Config`` dataclass in ``path``."""
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
            for st in node.body:
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                    yield (f"{node.name}.{st.target.id}", lines[st.lineno - 1], lines[(st.end_lineno or st.lineno) - 1],
                           lines[st.lineno - 2])


def test_every_schema_field_says_what_it_is_where_it_is_declared():
    bare = [f"{p.relative_to(PACKAGE)}: {name}" for p in sorted(PACKAGE.rglob("*.py"))
            for name, first, last, before in _config_fields(p)
            if "#" not in first and "#" not in last and not before.strip().startswith("#")]
    assert bare == []
