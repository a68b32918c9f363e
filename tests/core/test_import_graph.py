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
import re
from pathlib import Path

import zslretrieval

PKG_DIR = Path(zslretrieval.__file__).parent
PKG = "zslretrieval"
DESIGN = PKG_DIR.parent / "DESIGN.md"


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
    assert f"{PKG}.data.base" in g[f"{PKG}.query.benchmark_map"]


def test_find_cycles_detects_a_cycle():
    # the detector itself must be able to fail
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles inside zslretrieval (module-level or lazy imports): " + "; ".join(
        " <-> ".join(c) for c in cycles)


# -- package layers ----------------------------------------------------------------------------------
def package_of(mod: str) -> str:
    """Top-level package (or module) of a module: ``zslretrieval.index.reader`` -> ``index``; "" for the root."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph(graph: dict[str, set[str]] | None = None) -> dict[str, dict[str, set[str]]]:
    """package -> {imported package -> the module edges "a -> b" behind it}, cross-package edges only."""
    out: dict[str, dict[str, set[str]]] = {}
    for mod, targets in (import_graph() if graph is None else graph).items():
        a = package_of(mod)
        out.setdefault(a, {})
        for t in targets:
            b = package_of(t)
            if b != a:
                out[a].setdefault(b, set()).add(f"{mod} -> {t}")
    return out


def read_layers(text: str) -> list[list[str]]:
    """The numbered list of DESIGN.md's "## Layers" section: one list of package names per layer, lowest first."""
    m = re.search(r"^## Layers\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "DESIGN.md has no '## Layers' section"
    layers = []
    for item in re.findall(r"^\d+\. (.*)$", m.group(1), re.M):
        head = item.split(" -- ")[0]    # the names; what follows explains the layer
        layers.append(re.findall(r"`([^`]+)`", head))
    return layers


def layer_violations(pkgs: dict[str, dict[str, set[str]]], layers: list[list[str]]) -> list[str]:
    """Every cross-package edge that does not point to a lower layer, and every package not in a layer."""
    rank = {p: i for i, names in enumerate(layers) for p in names}
    out = [f"{p}: not in any layer of DESIGN.md" for p in sorted(pkgs) if p and p not in rank]
    for a in sorted(pkgs):
        for b, why in sorted(pkgs[a].items()):
            if a in rank and b in rank and rank[b] >= rank[a]:
                out.append(f"{a} (layer {rank[a] + 1}) -> {b} (layer {rank[b] + 1}): {'; '.join(sorted(why))}")
    return out


def test_layer_check_can_fail():
    layers = read_layers("## Layers\n\n1. `a`\n2. `b`, `c` -- why\n   more why\n3. `d`\n\n## Next\n")
    assert layers == [["a"], ["b", "c"], ["d"]]
    down = {"d": {"b": {"d.x -> b.y"}}, "b": {"a": {"b -> a"}}, "c": {}, "a": {}}
    assert layer_violations(down, layers) == []
    up = {**down, "a": {"d": {"a -> d.z"}}, "c": {"b": {"c -> b"}}, "e": {}}
    assert layer_violations(up, layers) == ["e: not in any layer of DESIGN.md",
                                            "a (layer 1) -> d (layer 3): a -> d.z", "c (layer 2) -> b (layer 2): c -> b"]


def test_package_layers():
    """Packages import only down DESIGN.md's layers, so the package graph has no cycle either."""
    pkgs = package_graph()
    assert not pkgs.get(""), f"the root package imports {sorted(pkgs[''])}; it holds only the version"
    layers = read_layers(DESIGN.read_text())
    assert len({p for names in layers for p in names}) == sum(map(len, layers)), "a package in two layers"
    bad = layer_violations(pkgs, layers)
    cycles = find_cycles({a: set(bs) for a, bs in pkgs.items()})
    assert not bad and not cycles, "package layers broken:\n" + "\n".join(
        bad + ["package cycle: " + " <-> ".join(c) for c in cycles])
