"""No import cycle inside zslretrieval/.

The graph is built with ``ast`` from the source (nothing is imported): one node per module, an
edge for every ``import`` / ``from ... import`` that names another zslretrieval module --
**at module level and inside functions alike**. Function-level (lazy) imports are counted on
purpose: they keep start-up light, but a cycle hidden behind one is still two modules that each
need the other, i.e. one concern split in two places. The only edges not counted are
``if TYPE_CHECKING:`` blocks (never executed) and a module importing its own parent package
(Python has initialised the parent before any child runs, so that edge cannot order anything).
``from pkg import name`` counts as an edge to ``pkg.name`` when that is a module, else to ``pkg``.
Lazy package exports through ``__getattr__`` + importlib are not edges (no import statement).
"""
from __future__ import annotations

import ast
from pathlib import Path

import zslretrieval

PKG_DIR = Path(zslretrieval.__file__).parent
PKG = "zslretrieval"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG_DIR.rglob("*.py"):
        rel = p.relative_to(PKG_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes anywhere in the tree except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    targets.append(sub if sub in mods else src)
            for t in targets:
                if t not in mods or t == mod:
                    continue
                if mod.startswith(t + "."):  # a child importing its own (already initialised) parent package
                    continue
                graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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


def test_graph_sees_the_package():
    g = import_graph()
    assert f"{PKG}.index.reader" in g and f"{PKG}.index.writer" in g[f"{PKG}.index.reader"]
    assert f"{PKG}.data.base" in g[f"{PKG}.query.evaluate"]


def test_find_cycles_detects_a_cycle():
    # the detector itself must be able to fail
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles inside zslretrieval (module-level or lazy imports): " + "; ".join(
        " <-> ".join(c) for c in cycles)
