"""The command-line contract, enforced: bad values exit 2 with one line and no traceback,
internal errors exit 70 with a hint, a closed stdout is not an error, and SIGINT / SIGTERM end
every long-running command with 130 / 143 (Node commands saying goodbye).

The bad-value table is generated from the parser: every option whose type is one of
``mcastkit.cli.argtypes`` is fed every value that type lists as bad, so a new option with a
typed value is covered the day it is added.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ISOLATED
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.cli import info
from mcastkit.cli.argtypes import OptionType
from mcastkit.cli.main import build_parser, main

MCAST = [sys.executable, "-m", "mcastkit"]


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command path and its parser."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*prefix, name), sub))
                found.extend(_commands(sub, (*prefix, name)))
    return found


def _typed_cases() -> list[tuple[tuple[str, ...], str, str]]:
    cases = []
    for path, sub in _commands(build_parser()):
        for action in sub._actions:
            if isinstance(action.type, OptionType) and action.option_strings:
                option = action.option_strings[-1]
                cases.extend((path, option, bad) for bad in action.type.bad_examples)
    return cases


CASES = _typed_cases()


def test_the_table_covers_every_command_with_numeric_options() -> None:
    covered = {path for path, _, _ in CASES}
    for expected in [
        ("send",),
        ("listen",),
        ("ping",),
        ("bench", "send"),
        ("bench", "recv"),
        ("publish",),
        ("subscribe",),
        ("request",),
        ("serve",),
        ("chat",),
        ("peers",),
        ("demo",),
        ("dump",),
        ("send-file",),
        ("recv-file",),
    ]:
        assert expected in covered, expected
    assert len(CASES) > 400  # (command, option, value) cases; the count goes in the docs


@pytest.mark.parametrize(("path", "option", "bad"), CASES, ids=lambda v: str(v))
def test_a_bad_value_exits_2_naming_the_option(
    path: tuple[str, ...], option: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([*path, f"{option}={bad}"])
    err = capsys.readouterr().err
    assert raised.value.code == 2
    assert option in err and "error:" in err
    assert "Traceback" not in err


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_argument_list_parses_or_exits_2(data: st.DataObject) -> None:
    commands = _commands(build_parser())
    path, sub = data.draw(st.sampled_from(commands))
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    argv = list(path)
    for action in data.draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        argv.append(action.option_strings[-1])
        if action.nargs != 0:
            argv.append(data.draw(st.sampled_from(["1", "0", "-1", "nan", "x", "1e999", "64M"])))
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 2


def test_an_internal_error_exits_70_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: argparse.Namespace) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(info, "cmd_addr", broken)
    assert main(["addr", "239.1.1.1"]) == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "--debug" in err
    assert "Traceback" not in err
    with pytest.raises(RuntimeError):
        main(["--debug", "addr", "239.1.1.1"])


def test_a_closed_stdout_is_not_an_error() -> None:
    # `mcast addr ... --json | head -c 1`: the reader goes away after one byte.
    proc = subprocess.Popen(
        [*MCAST, "addr", *[f"239.1.1.{n}" for n in range(1, 200)], "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.read(1)
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"Broken pipe" not in err and b"Traceback" not in err


pytestmark_net = pytest.mark.skipif(not ISOLATED, reason="needs the private network namespace")


@pytestmark_net
def test_listen_into_head_exits_0_quietly() -> None:
    listen = subprocess.Popen(
        f"{sys.executable} -m mcastkit listen 239.255.91.1:5911 --iface lo --json | head -1",
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    for _ in range(3):
        subprocess.run(
            [*MCAST, "send", "239.255.91.1:5911", "x", "--iface", "lo"],
            check=True,
            capture_output=True,
        )
        time.sleep(0.2)
    out, err = listen.communicate(timeout=30)
    assert json.loads(out)["text"] == "x"
    assert "Broken pipe" not in err and "Traceback" not in err


# --- signals -------------------------------------------------------------------------------

LONG_RUNNING = {
    # command: (arguments, a stderr line that says it is running)
    "listen": (["listen", "239.255.92.1:5921", "--iface", "lo"], "listening on"),
    "ping": (["ping", "239.255.92.2:5922", "--iface", "lo", "--interval", "0.2"], "ping"),
    "bench recv": (["bench", "recv", "239.255.92.3:5923", "--iface", "lo"], "bench recv"),
    "dump": (["dump", "239.255.92.4:5924", "--iface", "lo"], "dump"),
    "recv-file": (
        ["recv-file", "--group", "239.255.92.5:5925", "--iface", "lo", "--dir", "/tmp"],
        "waiting for a transfer",
    ),
    # --expect 5 with two nodes: it would run the full minute (it stops early once answered)
    "demo": (
        ["demo", "239.255.92.6:5926", "--nodes", "2", "--expect", "5", "--duration", "60"],
        "demo on",
    ),
    "subscribe": (["subscribe", "--group", "239.255.92.7:5927", "--iface", "lo"], "subscribed"),
    "serve": (
        ["serve", "t", "--reply", "x", "--group", "239.255.92.8:5928", "--iface", "lo"],
        "serving",
    ),
    "peers": (["peers", "--group", "239.255.92.9:5929", "--iface", "lo"], "watching"),
    "publish": (
        [
            "publish",
            "t",
            "m",
            "--count",
            "100000",
            "--interval",
            "0.05",
            "--group",
            "239.255.93.1:5931",
            "--iface",
            "lo",
        ],
        None,
    ),
    "send-file": (
        [
            "send-file",
            sys.executable,
            "--group",
            "239.255.93.2:5932",
            "--iface",
            "lo",
            "--wait",
            "60",
        ],
        "announcing",
    ),
    "send": (
        [
            "send",
            "239.255.93.3:5933",
            "x",
            "--iface",
            "lo",
            "--count",
            "100000",
            "--interval",
            "0.05",
        ],
        "sending to",
    ),
}


def _started(args: list[str], ready: str | None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*MCAST, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if ready is None:
        time.sleep(2.0)
        return proc
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if ready in line:
            time.sleep(0.5)
            return proc
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{args} never said {ready!r}: {seen}")


@pytestmark_net
@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_signals_end_long_commands_with_128_plus_the_signal(name: str, signum: int) -> None:
    args, ready = LONG_RUNNING[name]
    proc = _started(args, ready)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"mcast {name} hung after signal {signum}") from None
    assert proc.returncode == 128 + signum, (name, proc.returncode, err)
    assert "Traceback" not in err


@pytestmark_net
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signalled_node_says_goodbye_so_peers_see_it_leave(signum: int) -> None:
    group = "239.255.94.1:5941"
    watcher = _started(["peers", "--group", group, "--iface", "lo", "--json"], "watching")
    node = _started(
        ["subscribe", "--group", group, "--iface", "lo", "--name", "leaver"], "subscribed"
    )
    time.sleep(1.0)
    node.send_signal(signum)
    node.communicate(timeout=20)
    assert node.returncode == 128 + signum
    time.sleep(0.5)
    watcher.send_signal(signal.SIGINT)
    out, _ = watcher.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    kinds = [e.get("event") for e in events if e.get("name") == "leaver"]
    assert "joined" in kinds and "left" in kinds and "failed" not in kinds, events


@pytestmark_net
def test_subscribe_prints_its_summary_when_interrupted() -> None:
    proc = _started(["subscribe", "--group", "239.255.94.2:5942", "--iface", "lo"], "subscribed")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "0 message(s) received" in err


@pytestmark_net
def test_send_prints_what_went_out_when_interrupted() -> None:
    proc = _started(LONG_RUNNING["send"][0], "sending to")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and "datagram(s)" in err.splitlines()[-1]
