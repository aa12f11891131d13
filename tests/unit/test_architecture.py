"""The house rules of docs/architecture.md, checked on the source: layers, no cycles, sizes."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "mcastkit"
MAX_LINES = 600

# docs/architecture.md: foundations 0, sans-I/O cores 1, runtimes 2, CLI 3.
RUNTIMES = {
    "aio",
    "sync",
    "demo",
    "transfer.runtime",
    "transfer.storage",
    "transfer.partial",
    "transfer.sources",
    "diag.runner",
    "node_paths",
    "relaying",
    "subscription",
}
CORES = {
    "session",
    "session_streams",
    "session_fast",
    "gate",
    "framing",
    "gather",
    "reach",
    "relay",
    "ifwatch",
    "transfer.states",
    "transfer.engine",
    "transfer.sending",
    "transfer.receiving",
    "transfer.protocol",
    "transfer.rate",
    "transfer.sealing",
    "transfer.trust",
    "diag.ping",
    "diag.bench",
    "diag.dump",
    "diag.top",
}


def _layer(module: str) -> int:
    if module.startswith("cli") or module == "__main__":
        return 3
    if module in RUNTIMES or module.startswith("diag.doctor"):
        return 2
    if module in CORES or module.startswith("reliable"):
        return 1
    return 0


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """mcastkit modules that ``module`` imports (anywhere in the file)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "":
        package = []
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("mcastkit"):
                target = node.module.removeprefix("mcastkit").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}".lstrip(".")
                out.add(candidate if candidate in known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mcastkit"):
                    out.add(alias.name.removeprefix("mcastkit").lstrip("."))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) - {name} for name, path in modules.items()}


def test_no_module_imports_the_package_root() -> None:
    # The root re-exports the public API; a module reaching back up to it is the arrow that
    # runs the wrong way (it was aio.py, for the version).
    for module, targets in _graph().items():
        if module:
            assert "" not in targets, f"{module} imports the package root"


def test_every_import_points_down_or_across() -> None:
    modules = _modules()
    for module, targets in _graph().items():
        if modules[module].name == "__init__.py":
            continue  # a package's front door re-exports its rooms, whatever their layer
        for target in targets:
            layers = f"{module} (layer {_layer(module)}) -> {target} (layer {_layer(target)})"
            assert _layer(target) <= _layer(module), layers


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, target]))
            if state.get(target) is None:
                visit(target, [*path, node])
        state[node] = 2

    for module in graph:
        if module and state.get(module) is None:
            visit(module, [])


def test_no_module_is_past_what_one_person_holds() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_every_public_name_of_the_package_resolves() -> None:
    """``mcastkit.X`` loads lazily from a home module: each home must really hold its name."""
    import subprocess
    import sys

    code = "import mcastkit\nfor name in mcastkit.__all__:\n    getattr(mcastkit, name)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
