"""The package's import graph: no circle among stgraph's modules (imports inside functions
counted), and the library never imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "stgraph"

#: The command-line modules: the only ones that may import stgraph.cli.
CLI_MODULES = {"stgraph.cli", "stgraph.cli_inference", "stgraph.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> nx.DiGraph:
    """Module -> module it imports, for every ``import`` / ``from ... import`` anywhere in
    the files (module level, functions, ``TYPE_CHECKING`` blocks alike); a ``from P import
    name`` where ``P.name`` is a module is an edge to that module, and an import of a
    module inside a package from outside it is also an edge to the package (its
    ``__init__`` runs first)."""
    files = {module_name(p): p for p in package.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    pkg = name.split(".") if is_package else name.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in files else base)
            for target in targets:
                while target and target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]  # stgraph.x.y.z: its module
                if target not in files or target == name:
                    continue
                graph.add_edge(name, target)
                # importing stgraph.p.m from outside package stgraph.p runs stgraph/p's
                # __init__ first: an edge to it too
                parts = target.split(".")
                for k in range(2, len(parts)):
                    pkg = ".".join(parts[:k])
                    if pkg in files and not (name == pkg or name.startswith(pkg + ".")):
                        graph.add_edge(name, pkg)
    return graph


def circles(graph: nx.DiGraph) -> list[list[str]]:
    """Each set of modules that import each other (strongly connected, more than one)."""
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "stgraph"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from stgraph import b\n")
    (pkg / "b.py").write_text("def f():\n    from stgraph.sub.c import g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import stgraph.a\nfrom . import d\n")
    (pkg / "sub" / "d.py").write_text("")
    (pkg / "e.py").write_text("from stgraph.sub.d import x\n")
    global PACKAGE
    real, PACKAGE = PACKAGE, pkg
    try:
        graph = import_graph(pkg)
    finally:
        PACKAGE = real
    assert set(graph.edges) == {("stgraph.a", "stgraph.b"), ("stgraph.b", "stgraph.sub.c"),
                                ("stgraph.b", "stgraph.sub"), ("stgraph.sub.c", "stgraph.a"),
                                ("stgraph.sub.c", "stgraph.sub.d"), ("stgraph.e", "stgraph.sub"),
                                ("stgraph.e", "stgraph.sub.d")}
    assert circles(graph) == [["stgraph.a", "stgraph.b", "stgraph.sub.c"]]


def test_no_import_circle_among_stgraphs_modules():
    found = circles(import_graph())
    assert not found, "modules that import each other (imports inside functions count):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_only_the_command_line_imports_the_command_line():
    graph = import_graph()
    users = sorted(m for m in graph.predecessors("stgraph.cli") if m not in CLI_MODULES)
    assert not users, f"library modules import stgraph.cli: {users}"
