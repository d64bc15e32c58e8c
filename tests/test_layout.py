"""The package's shape, kept as docs/architecture.md describes it: no module imports itself
back through others, lazily or for type checking alike."""

from __future__ import annotations

import ast
from pathlib import Path

ROUTER = Path(__file__).resolve().parent.parent / "router"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROUTER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The router modules ``path`` imports anywhere in it (inside functions and
    ``TYPE_CHECKING`` blocks too), a package's ``__init__`` counted only when named itself."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {module_name(path)}


def test_no_module_imports_itself_back() -> None:
    """Every import between router's modules points one way: a depth-first walk finds no
    cycle (a package's face, which only hands names on, is not a module of its own here)."""
    paths = {module_name(p): p for p in ROUTER.rglob("*.py")}
    modules = set(paths)
    faces = {name for name, p in paths.items() if p.name == "__init__.py"}
    graph = {name: imports_of(p, modules) - faces for name, p in paths.items()
             if name not in faces}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph.get(name, ())):
            if state.get(other) == 1:
                cycles.append([*trail[trail.index(other):], other])
            elif other not in state:
                visit(other, [*trail, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
