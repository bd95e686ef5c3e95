"""The SIP core's shape: no import cycle between its modules, no asyncio, modules kept small."""

from __future__ import annotations

import ast
from pathlib import Path

import ivrbot.sip

SIP = Path(ivrbot.sip.__file__).parent
#: the asyncio shell; everything else under sip/ is sans-IO
SHELL = {"server", "call"}  # the asyncio shell: the endpoint and its per-call slot
MAX_LINES = 450


def _imports(path: Path) -> set[str]:
    """The ivrbot.sip modules ``path`` imports, at any depth (function-level imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ivrbot.sip":
                out.update(a.name for a in node.names)
            elif node.module.startswith("ivrbot.sip."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("ivrbot.sip."))
    return out


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in SIP.glob("*.py") if p.stem != "__init__"}


def test_no_import_cycle_between_sip_modules() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_the_core_does_no_io() -> None:
    for path in SIP.glob("*.py"):
        if path.stem in SHELL:
            continue
        nodes = list(ast.walk(ast.parse(path.read_text())))
        names = {n.name for node in nodes if isinstance(node, ast.Import) for n in node.names}
        names |= {node.module or "" for node in nodes if isinstance(node, ast.ImportFrom)}
        assert not names & {"asyncio", "socket", "selectors"}, path.name



def test_modules_are_small_or_say_why() -> None:
    for path in SIP.glob("*.py"):
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert lines <= MAX_LINES or "lines" in doc, f"{path.name}: {lines} lines"
