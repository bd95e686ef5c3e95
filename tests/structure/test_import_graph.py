"""The import graph of the four roots: who may import whom, no cycles, each extra covering its root.

One root per deployable (README "Layout"): the bot ships alone in its image, the sidecars in
theirs, the operator in its own; the tools are the developer harness. An edge the wrong way
would pull one deployable's code and dependencies into another's image.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: import root -> (directory, the pyproject extra its deployable installs)
ROOTS = {
    "ivrbot": ("bot", "bot"),
    "ivrbot_sidecars": ("sidecars", "sidecars"),
    "ivrbot_tools": ("tools", "dev"),
    "ivrbot_operator": ("operator", "operator"),
}
#: cycles that another open change removes; an entry whose cycle is gone fails the test (delete it then)
KNOWN_CYCLES: list[set[str]] = []


class Import:
    def __init__(self, source: str, target: str, guarded: bool) -> None:
        self.source, self.target, self.guarded = source, target, guarded


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg, (directory, _) in ROOTS.items():
        base = ROOT / directory
        for path in sorted((base / pkg).rglob("*.py")):
            out[_module_name(path, base)] = path
    return out


def _is_import_guard(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    for handler in node.handlers:
        caught = handler.type
        elts = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if any(isinstance(e, ast.Name) and e.id in names for e in elts):
            return True
    return False


def _third_party_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import statement, at any depth (a lazy import is still an edge); `guarded` when optional."""
    is_pkg = path.name == "__init__.py"

    def visit(node: ast.AST, guarded: bool) -> Iterator[Import]:
        if isinstance(node, ast.Try) and _is_import_guard(node):
            for child in node.body:
                yield from visit(child, True)
            for rest in (*node.handlers, *node.orelse, *node.finalbody):
                yield from visit(rest, guarded)
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                yield from visit(child, True)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, guarded)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                first_party = base.split(".")[0] in ROOTS
                is_module = sub in modules if first_party else _third_party_module(sub)
                yield Import(module, sub if is_module else base, guarded)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, guarded)

    yield from visit(ast.parse(path.read_text(), str(path)), False)


MODULES = _modules()
IMPORTS = [imp for name, path in MODULES.items() for imp in _imports(name, path, MODULES)]


def _first_party_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        target = imp.target
        while target and target not in MODULES:  # `from ivrbot.x import name` of a non-module name
            target = target.rpartition(".")[0]
        if target and target != imp.source:
            graph[imp.source].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_graph_sees_every_root_and_its_edges() -> None:
    assert {m.split(".")[0] for m in MODULES} == set(ROOTS)
    graph = _first_party_graph()
    assert "ivrbot.server" in graph["ivrbot.server"] or "ivrbot.sip.server" in graph["ivrbot.server"]
    assert "ivrbot_tools.stack" in graph["ivrbot_tools.stack_cli"]


def test_no_import_cycle_between_modules() -> None:
    found = _cycles(_first_party_graph())
    unknown = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert unknown == [], "import cycles"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert gone == [], "these cycles are gone: delete them from KNOWN_CYCLES"


def _edges(source_prefix: str, target_prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{imp.source} -> {imp.target}"
        for imp in IMPORTS
        if (imp.source == source_prefix or imp.source.startswith(source_prefix + "."))
        and any(imp.target == t or imp.target.startswith(t + ".") for t in target_prefixes)
    )


def test_the_bot_imports_no_other_root() -> None:
    assert _edges("ivrbot", ("ivrbot_tools", "ivrbot_sidecars", "ivrbot_operator")) == []


def test_the_sidecars_import_neither_the_bot_nor_the_tools() -> None:
    assert _edges("ivrbot_sidecars", ("ivrbot", "ivrbot_tools", "ivrbot_operator")) == []


def test_the_operator_imports_no_other_root() -> None:
    # the pod contract between the operator and the bot's config is a test (tests/operator/test_pod_contract.py)
    assert _edges("ivrbot_operator", ("ivrbot", "ivrbot_tools", "ivrbot_sidecars")) == []


def test_the_caller_shares_no_sip_sdp_or_rtp_code_with_the_bot() -> None:
    """The caller is the bot's test oracle: only the G.711 codec is shared."""
    assert _edges("ivrbot_tools.caller", ("ivrbot.sip", "ivrbot.sdp", "ivrbot.rtp", "ivrbot.transport")) == []
    shared = {imp.target for imp in IMPORTS if imp.source.startswith("ivrbot_tools.caller")
              and imp.target.split(".")[0] == "ivrbot"}
    assert shared <= {"ivrbot.audio.g711"}


# -- each extra covers the third-party imports of its root -------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, set[str]]:
    m = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", spec)
    assert m, spec
    return _norm(m.group(1)), {_norm(e) for e in (m.group(2) or "").split(",") if e.strip()}


def _closure(extra: str) -> set[str]:
    """The distributions that installing `ivrbot[extra]` brings, from pyproject and installed metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [_requirement(s) for s in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        if name == "ivrbot":
            todo += [_requirement(s) for e in extras for s in project["optional-dependencies"][e]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in requires:
            spec, _, marker = req.partition(";")
            wanted = re.findall(r'extra\s*==\s*"([^"]+)"', marker)
            if wanted and not ({_norm(w) for w in wanted} & extras):
                continue
            if "python_version" in marker and not eval_marker(marker):
                continue
            todo.append(_requirement(spec))
    return seen


def eval_marker(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(re.sub(r'and\s+extra\s*==\s*"[^"]+"|extra\s*==\s*"[^"]+"\s*and', "", marker)).evaluate()


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def _files_of(distribution: str) -> frozenset[Path]:
    files = importlib.metadata.distribution(distribution).files or []
    return frozenset(Path(str(f.locate())).resolve() for f in files if f.suffix in (".py", ".so"))


@functools.cache
def _distribution_of(module: str) -> str | None:
    """The distribution whose files hold `module` (namespace packages such as opentelemetry span many)."""
    parts = module.split(".")
    candidates = _packages_distributions().get(parts[0], [])
    for n in range(len(parts), 0, -1):  # the deepest importable name: a namespace package has no file
        try:
            spec = importlib.util.find_spec(".".join(parts[:n]))
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        origin = Path(spec.origin).resolve()
        for name in candidates:
            if origin in _files_of(name):
                return _norm(name)
    return None


#: the model packages are installed beside an extra (the images add them; scripts/setup.sh installs `[models]`)
WITH_MODELS = {"bot", "sidecars"}


@pytest.mark.parametrize("root", list(ROOTS))
def test_each_extra_covers_the_third_party_imports_of_its_root(root: str) -> None:
    extra = ROOTS[root][1]
    installed = _closure(extra) | (_closure("models") if extra in WITH_MODELS else set())
    missing = set()
    for imp in IMPORTS:
        top = imp.target.split(".")[0]
        if imp.source.split(".")[0] != root or imp.guarded or top in sys.stdlib_module_names or top in ROOTS:
            continue
        dist = _distribution_of(imp.target)
        assert dist is not None, f"{imp.source}: cannot tell which distribution provides {imp.target}"
        if dist not in installed:
            missing.add(f"{imp.source} imports {imp.target} ({dist})")
    assert sorted(missing) == [], f"not installed by ivrbot[{extra}]"


# -- a command whose extra is missing says so in one line ----------------------------------------
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
from ivrbot.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(
    ("argv", "blocked", "extra"),
    [
        (["serve"], {"pipecat"}, "bot"),
        (["vosk-server", "--help"], {"websockets"}, "sidecars"),
        (["piper-server", "--help"], {"structlog"}, "sidecars"),
        (["bench", "--help"], {"ivrbot_tools"}, "dev"),
        (["stack"], {"ivrbot_tools", "ivrbot_sidecars"}, "dev"),
    ],
)
def test_a_command_without_its_extra_names_the_extra_in_one_line(
    argv: list[str], blocked: set[str], extra: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=blocked, argv=argv)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"needs the [{extra}] extra" in lines[0] and f"ivrbot[{extra}]" in lines[0]
