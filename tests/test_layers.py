"""The layers hold: imports run down hw_profiles < costmodel < searchspace < search, no cycles.

Read from the source with ``ast``, so an import inside a function counts as
much as one at the top of a file. Command-line modules (``_cli.py``, one per
command ``_cli_<command>.py``, ``__main__.py``) are glue and may reach up.
Within a package the modules must import each other without a cycle: among the
imports run when the package loads (module level, ``if TYPE_CHECKING:`` blocks
left out), and also counting imports inside functions, so that none dodges a
cycle by hiding in a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("hw_profiles", "costmodel", "searchspace", "search")
GLUE = ("_cli.py", "__main__.py")


def is_glue(path: Path) -> bool:
    return path.name in GLUE or (path.name.startswith("_cli_") and path.suffix == ".py")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """Modules an import statement loads: ``from pkg import sub`` loads ``pkg.sub``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing package
        pkg = importer.split(".")
        pkg = pkg if is_package else pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join([*pkg, *([base] if base else [])])
    subs = [f"{base}.{alias.name}" for alias in node.names]
    found = [s for s in subs if is_module(s)]
    return found if len(found) == len(subs) else [*found, base]


def imports(
    path: Path, *, in_functions: bool = True, type_checking: bool = True
) -> list[tuple[str, int]]:
    """(imported module, line) of the imports in a file: all, or only some kinds."""
    tree = ast.parse(path.read_text(), str(path))
    me, is_package = module_name(path), path.name == "__init__.py"
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.extend((t, node.lineno) for t in _targets(node, me, is_package))
            return
        if not in_functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_imports_run_down_the_layers(package: str) -> None:
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = []
    for path in package_files(package):
        if is_glue(path):
            continue
        for target, line in imports(path):
            top = target.split(".")[0]
            if rank.get(top, -1) > rank[package]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("in_functions", [False, True], ids=["on_load", "with_functions"])
@pytest.mark.parametrize(
    "package",
    LAYERS,
)
def test_no_import_cycle_within_a_package(package: str, in_functions: bool) -> None:
    graph: dict[str, set[str]] = {}
    for path in package_files(package):
        found = imports(path, in_functions=in_functions, type_checking=False)
        graph[module_name(path)] = {
            t for t, _ in found if t == package or t.startswith(package + ".")
        }
    assert not cycles(graph), f"import cycles in {package}: {cycles(graph)}"
