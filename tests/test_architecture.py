"""Issue 26: the package's shape is kept by tests, not by hope.

- No import cycle between modules, counting the imports inside functions (a lazy import
  that reaches back up only hides a cycle).
- No cycle between the wings (``erp_sms.outbox``, ``erp_sms.dispatch``, …, each package or
  top-level module one node): dependencies point one way, down the flow.
- No module of the package over 450 lines (migrations aside): a sign to split it.
- ``import erp_sms`` (the host path) loads neither twilio nor Flask.

The graph is read from the source with ``ast``, so it sees every import statement,
including those in functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import erp_sms

ROOT = Path(erp_sms.__file__).parent
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = ("erp_sms", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{node.module}" if node.module else anchor
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("erp_sms"):
                out.add(t)
                break
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
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


def _wing(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_modules_counting_imports_in_functions():
    assert _cycles(_graph()) == []


def test_no_cycle_between_the_wings():
    wings: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        if m == "erp_sms":
            continue  # the package's own face imports its parts
        wings.setdefault(_wing(m), set()).update(
            _wing(t) for t in targets if t != "erp_sms" and _wing(t) != _wing(m)
        )
    assert _cycles(wings) == []


def test_no_module_is_over_450_lines():
    long = {
        m: n
        for m, p in _modules().items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_graph_sees_an_import_inside_a_function():
    # The checks above could pass by not seeing imports: a module with only a lazy one.
    path = ROOT / "inline.py"
    assert "erp_sms.dispatch" in _imports("erp_sms.inline", path, _modules())


def test_importing_erp_sms_loads_neither_twilio_nor_flask():
    probe = (
        "import sys, erp_sms; "
        "print(sorted(m for m in ('twilio', 'flask', 'erp_sms.dispatch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_test_module_imports_another():
    """Shared helpers live in tests/helpers.py, staff_pages.py, factories.py, conftest.py."""
    here = Path(__file__).parent
    found = [
        f"{p.name}: {line.strip()}"
        for p in sorted(here.rglob("test_*.py"))
        for line in p.read_text(encoding="utf-8").splitlines()
        if ".test_" in line and line.strip().startswith(("from ", "import "))
    ]
    assert found == []
