"""The packages' imports: no cycle, no import hidden in a function to dodge one, the
core (``coalition``) never depends on the packages built on it (``partners``,
``settlement``), and a server worker loads no migration tooling."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coalition", "partners", "settlement", "config")

#: imports inside a function, each for a stated reason: (module, imported module); none
#: is needed today
ALLOWED_IN_FUNCTIONS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.relative_to(ROOT).parts:
                continue  # Alembic loads the migrations by path, never by import
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The project's modules an import statement names (``from a import b`` names
    ``a.b`` when that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        assert not node.level, f"{module}: a relative import"
        base = node.module or ""
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                 for alias in node.names]
    return [name for name in names if name in MODULES]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    in_functions = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for statement in tree.body:  # module level (including under ``if`` and ``try``)
            for node in ast.walk(statement):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    break
                if isinstance(node, ast.Import | ast.ImportFrom):
                    edges[module].update(_imported(node, module))
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        names = _imported(node, module) or [
                            getattr(node, "module", None) or node.names[0].name]
                        in_functions += [(module, name, node.lineno) for name in names]
    return edges, in_functions


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, if there is one (depth-first search)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_walk_sees_the_packages():
    edges, _ = _graph()
    assert {"coalition.app", "coalition.http.errors", "partners.register",
            "settlement.register", "config"} <= set(edges)
    assert "coalition.http.errors" in edges["coalition.http.limits"]
    assert "coalition.oauth.server" in edges["coalition.http.guard"]


def test_no_import_cycle():
    edges, _ = _graph()
    assert _cycle(edges) is None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_inside_a_function_but_the_allowed_ones():
    _, in_functions = _graph()
    unexpected = [f"{module}:{line} imports {name}" for module, name, line in in_functions
                  if (module, name) not in ALLOWED_IN_FUNCTIONS]
    assert unexpected == []


@pytest.mark.parametrize("package", ["partners", "settlement"])
def test_the_core_never_imports_the_packages_built_on_it(package):
    edges, in_functions = _graph()
    reached = {(module, target) for module, targets in edges.items() for target in targets}
    reached |= {(module, name) for module, name, _ in in_functions}
    assert [(module, target) for module, target in sorted(reached)
            if module.split(".")[0] == "coalition" and target.split(".")[0] == package] == []


def test_the_app_loads_alembic_only_for_a_migration(tmp_path):
    """A served app (every gunicorn worker) leaves Alembic, Mako and Pygments unloaded;
    the database commands still load it."""
    script = (
        "import json, sys\n"
        "from coalition.app import create_app\n"
        "app = create_app({'ENV': 'testing', 'SECRET_KEY': 'x' * 32,\n"
        f"                  'DATABASE_URL': 'sqlite:///{tmp_path / 'db.sqlite3'}'}})\n"
        "served = sorted(m for m in ('alembic', 'mako', 'pygments') if m in sys.modules)\n"
        "from coalition.migrations import runner\n"
        "with app.app_context():\n"
        "    runner.upgrade()\n"
        "print(json.dumps([served, 'alembic' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [[], True]
