"""The server package's import structure: services know no web framework, and the runtime and
the services do not import each other in a circle (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import tollgate_server

PACKAGE = Path(tollgate_server.__file__).parent
FRAMEWORKS = ("fastapi", "starlette", "uvicorn")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (inside TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    return {name: _imports(path) & set(modules) for name, path in modules.items()}


def test_services_import_no_web_framework() -> None:
    offenders = {
        name: sorted(i for i in _imports(path) if i.split(".")[0] in FRAMEWORKS)
        for path in (PACKAGE / "services").rglob("*.py")
        if (name := _module_name(path))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_runtime_reaches_no_module_that_imports_it() -> None:
    graph = _graph()
    runtime = "tollgate_server.runtime"
    reached: set[str] = set()
    todo = list(graph[runtime])
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo.extend(graph.get(module, ()))
    assert runtime not in reached, "runtime.py imports, directly or not, a module importing it"


def test_the_cycle_check_sees_a_cycle() -> None:
    # The check above would pass vacuously if the graph missed imports: the engine must be
    # seen importing the runtime.
    assert "tollgate_server.runtime" in _graph()["tollgate_server.services.gateway"]
