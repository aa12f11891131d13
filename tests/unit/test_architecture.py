"""The house rules of docs/architecture.md, checked on the source: every module in one room,
arrows only down, no I/O in a core, no cycle, sizes, and handlers for every frame kind."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "mcastkit"
MAX_LINES = 600  # a module
MAX_CLASS_LINES = 560  # a class: an owner holds one job, not a file's worth of mixins

# docs/architecture.md. Foundations 0 (pure vocabulary), sans-I/O cores 1, the transport 1
# too but a room of its own (the I/O layer: cores may not import it), runtimes 2, CLI 3.
FOUNDATIONS = {
    "__init__",
    "addr",
    "units",
    "errors",
    "version",
    "magics",
    "wire",
    "security",
    "events",
    "peers",
    "pacing",
    "refusals",
    "core",
    "netif",
}
TRANSPORT = {
    "transport",
    "transport.ancillary",
    "transport.batch",
    "transport.capture",
    "transport.driver",
    "transport.handles",
    "transport.interfaces",
    "transport.joinreq",
    "transport.mmsg",
    "transport.netlink",
    "transport.platform",
    "transport.sockets",
    "transport.unicast",
}
CORES = {
    "session",
    "session_port",
    "session_streams",
    "session_fast",
    "gate",
    "framing",
    "gather",
    "reach",
    "relay",
    "ifwatch",
    "reliable",
    "reliable.codec",
    "reliable.config",
    "reliable.gaps",
    "reliable.inbound",
    "reliable.rate",
    "reliable.receiver",
    "reliable.runs",
    "reliable.sender",
    "transfer.states",
    "transfer.engine",
    "transfer.sending",
    "transfer.receiving",
    "transfer.sinks",
    "transfer.protocol",
    "transfer.rate",
    "transfer.sealing",
    "transfer.trust",
    "diag.ping",
    "diag.bench",
    "diag.dump",
    "diag.top",
    "diag.seqs",
    "diag.doctor.model",
    "diag.doctor.checks",
    "diag.doctor.firewall",
}
RUNTIMES = {
    "aio",
    "sync",
    "demo",
    "subscription",
    "node_paths",
    "relaying",
    "transfer",
    "transfer.runtime",
    "transfer.sender_host",
    "transfer.receiver_host",
    "transfer.storage",
    "transfer.partial",
    "transfer.sources",
    "diag",
    "diag.runner",
    "diag.doctor",
    "diag.doctor.collect",
    "diag.doctor.link",
    "diag.doctor.selftest",
    "keyfiles",
}
CLI = {"__main__", "cli"} | {
    f"cli.{name}"
    for name in [
        "argtypes",
        "bench",
        "demo",
        "diag",
        "doctor",
        "dump",
        "group",
        "hide",
        "info",
        "main",
        "node_options",
        "output",
        "pubsub",
        "relay",
        "rpc",
        "signals",
        "traffic",
        "transfer",
    ]
}
LAYER = (
    {m: 0 for m in FOUNDATIONS}
    | {m: 1 for m in CORES | TRANSPORT}
    | {m: 2 for m in RUNTIMES}
    | {m: 3 for m in CLI}
)
# What a core may not import: it is given bytes and time, it never fetches them.
IO_MODULES = {
    "asyncio",
    "socket",
    "select",
    "selectors",
    "os",
    "io",
    "time",
    "threading",
    "subprocess",
    "ctypes",
    "fcntl",
    "mmap",
    "shutil",
    "tempfile",
    "pathlib",
    "signal",
}
IO_CALLS = {"open", "print", "input"}  # builtins that reach the world


def _modules(root: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """mcastkit modules that ``module`` imports (anywhere in the file, lazily too)."""
    if module == "__init__":
        package: list[str] = []
    elif path.name == "__init__.py":
        package = module.split(".")
    else:
        package = module.split(".")[:-1]
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
                out.add(candidate if candidate in known else target or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mcastkit"):
                    out.add(alias.name.removeprefix("mcastkit").lstrip(".") or "__init__")
    return out


def _graph(root: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(root)
    known = set(modules)
    return {name: _imports(name, path, known) - {name} for name, path in modules.items()}


def _stdlib_imports(path: Path) -> dict[str, int]:
    """Top-level names of non-mcastkit modules imported, with a line of each."""
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.setdefault(node.module.split(".")[0], node.lineno)
    return out


def _unclassified(root: Path = SRC) -> list[str]:
    rooms = [FOUNDATIONS, TRANSPORT, CORES, RUNTIMES, CLI]
    return [m for m in _modules(root) if sum(m in room for room in rooms) != 1]


def _upward(root: Path = SRC) -> list[str]:
    return [
        f"{module} (layer {LAYER[module]}) -> {target} (layer {LAYER[target]})"
        for module, targets in _graph(root).items()
        if module != "__init__"  # the front door loads its names lazily from every room
        for target in targets
        if LAYER.get(target, 0) > LAYER.get(module, 0)
    ]


def _into_transport(root: Path = SRC) -> list[str]:
    pure = CORES | FOUNDATIONS - {"__init__"}
    return [
        f"{module} (no I/O) imports the I/O layer: {target}"
        for module, targets in _graph(root).items()
        if module in pure
        for target in targets
        if target in TRANSPORT
    ]


def _io_in_cores(root: Path = SRC) -> list[str]:
    found = []
    for module, path in _modules(root).items():
        if module not in CORES | FOUNDATIONS - {"__init__"}:
            continue
        for name, line in _stdlib_imports(path).items():
            if name in IO_MODULES:
                found.append(f"{module}:{line} imports {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in IO_CALLS:
                found.append(f"{module}:{node.lineno} calls {node.func.id}()")
    return found


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    # The checks themselves, on a small tree that breaks each rule once.
    (tmp_path / "session.py").write_text("import socket\nfrom .aio import Node\n")
    (tmp_path / "gate.py").write_text("from .transport.sockets import x\nopen('f')\n")
    (tmp_path / "aio.py").write_text("")
    (tmp_path / "transport").mkdir()
    (tmp_path / "transport" / "sockets.py").write_text("")
    (tmp_path / "stranger.py").write_text("")
    assert _unclassified(tmp_path) == ["stranger"]
    assert _upward(tmp_path) == ["session (layer 1) -> aio (layer 2)"]
    assert _into_transport(tmp_path) == ["gate (no I/O) imports the I/O layer: transport.sockets"]
    assert sorted(_io_in_cores(tmp_path)) == ["gate:2 calls open()", "session:1 imports socket"]


def test_the_rules_see_the_whole_tree() -> None:
    # A test of an empty tree (a wrong SRC, a moved package) passes everything: not this one.
    assert len(_modules()) > 80
    assert {"session", "aio", "transport.sockets", "cli.main"} <= set(_modules())


def test_every_module_has_one_room() -> None:
    assert not _unclassified(), "each module belongs in one room (docs/architecture.md)"
    stale = set(LAYER) - set(_modules())
    assert not stale, f"classified but gone: {stale}"


def test_no_module_imports_the_package_root() -> None:
    # The root re-exports the public API; a module reaching back up to it is the arrow that
    # runs the wrong way (it was aio.py, for the version).
    for module, targets in _graph().items():
        if module != "__init__":
            assert "__init__" not in targets, f"{module} imports the package root"


def test_every_import_points_down_or_across() -> None:
    assert not _upward()


def test_cores_never_reach_the_transport() -> None:
    assert not _into_transport()


def test_cores_do_no_io() -> None:
    assert not _io_in_cores()


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
        if module != "__init__" and state.get(module) is None:
            visit(module, [])


def test_no_module_is_past_what_one_person_holds() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_no_class_is_past_one_owner() -> None:
    long = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    long[f"{path.relative_to(SRC)}:{node.name}"] = size
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


def test_no_class_is_a_mixin_with_stubs_of_its_host() -> None:
    # "Provided by <host>" and methods that only raise NotImplementedError were how a class
    # was cut across files; an owned part gets a port instead.
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "Provided by" not in text, f"{path.relative_to(SRC)}: a mixin's stubs"


def test_the_transport_is_closed() -> None:
    # Sockets are the transport's: above it nothing reaches for a GroupSocket's ``.sock`` or
    # sets an option itself, and one builder packs an ip_mreqn.
    reached = []
    for module, path in _modules().items():
        text = path.read_text()
        if module in TRANSPORT:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr in ("sock", "setsockopt"):
                reached.append(f"{module}:{node.lineno} .{node.attr}")
    assert not reached, reached
    packers = [m for m, path in _modules().items() if "4s4si" in path.read_text()]
    assert packers == ["transport.joinreq"]


def test_events_are_imported_from_events_only() -> None:
    # One home for every event type: a re-export elsewhere is a second name to keep in step.
    events = ast.parse((SRC / "events.py").read_text())
    names = next(
        {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
        for node in events.body
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", "") == "__all__"
        and isinstance(node.value, (ast.List, ast.Tuple))
    )
    assert {"Message", "Unrecoverable", "PhaseChanged"} <= names
    elsewhere = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "events":
                if node.module and node.module.endswith(".events"):
                    continue
                hits = {alias.name for alias in node.names} & names
                if hits and not (node.module or "").startswith(("cryptography", "typing")):
                    elsewhere.append(f"{module}: {sorted(hits)} from {node.module}")
    assert not elsewhere, elsewhere


def test_the_cores_offer_the_one_contract() -> None:
    # core.Core: what a runtime calls, with time in float seconds (Driver.host drives any).
    import inspect

    from mcastkit.core import Core
    from mcastkit.diag.ping import PingSession
    from mcastkit.session import Session
    from mcastkit.transfer.engine import ReceiveSession, SendSession

    calls = {
        "receive_datagram": (b"", ("10.0.0.1", 1), 0.0),
        "handle_timer": (0.0,),
        "datagrams_to_send": (0.0,),
        "next_event": (),
        "next_timer": (),
    }
    assert set(calls) == {name for name in vars(Core) if not name.startswith("_")}
    for core in (Session, PingSession, SendSession, ReceiveSession):
        for name, args in calls.items():
            inspect.signature(getattr(core, name)).bind(None, *args)  # raises if not callable so


def test_every_frame_kind_has_a_handler() -> None:
    # A kind without one would be a KeyError on the receive path: hostile input must not
    # raise. The table is built per session, of bound handlers.
    from mcastkit.session import Session
    from mcastkit.wire import FrameType

    session = Session(node_id=1, incarnation=1, name="t", now=0.0, random_bytes=bytes)
    assert set(session._handlers) == set(FrameType)


def test_every_public_name_of_the_package_resolves() -> None:
    """``mcastkit.X`` loads lazily from a home module: each home must really hold its name."""
    import subprocess
    import sys

    code = "import mcastkit\nfor name in mcastkit.__all__:\n    getattr(mcastkit, name)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
