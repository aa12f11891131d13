"""The ``mcast`` command as a user runs it: real processes, real sockets on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mcastkit.cli.main import main


def mcast(
    *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcastkit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_three_nodes_on_loopback_all_greet_and_answer() -> None:
    result = mcast("demo", "--nodes", "3", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["complete"] and summary["interface"] == "lo"
    ids = {n["id"] for n in summary["nodes"]}
    assert len(ids) == 3
    for node in summary["nodes"]:
        assert set(node["greeted_by"]) == ids - {node["id"]}
        assert set(node["answered_by"]) == ids - {node["id"]}
        assert node["own_messages_ignored"] >= 1
    kinds = [line["event"]["kind"] for line in lines[:-1]]
    assert kinds.count("greeted") >= 6 and kinds.count("answered") >= 6


def test_demo_human_output_shows_who_greeted_whom() -> None:
    result = mcast("demo", "--nodes", "2", "--name", "ignored-with-nodes")
    assert result.returncode == 0, result.stderr
    assert "hello from node-2" in result.stdout and "answered our hello" in result.stdout


def test_demo_first_run_is_quiet_and_names_every_node() -> None:
    """The first hour (issue 25, item 8): one short open-group line per process, not one
    300-character warning per node, and names from the first line on, never "?"."""
    result = mcast("demo", "--nodes", "3")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "is open" in line]
    assert len(warnings) == 1 and len(warnings[0]) < 120, warnings
    assert "docs/security.md" in warnings[0]
    events = [line for line in result.stdout.splitlines() if "->" in line or "answered" in line]
    assert len(events) >= 12 and not any("? [" in line for line in events), result.stdout


def test_a_too_long_serve_reply_is_named_as_serve() -> None:
    """Issue 25, item 9: it said "mcast None: error" (the --command option hid the name)."""
    result = mcast("serve", "t", "--reply", "x" * 2000, "--iface", "lo", "--timeout", "1")
    assert result.returncode == 2
    assert "mcast serve: error: --reply is 2000 bytes" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("send", "[ff02::1]:5000", "hi", "--broadcast"), "IPv6 has no broadcast"),
        (("listen", "[ff02::1]:5000", "--broadcast"), "IPv6 has no broadcast"),
        (("doctor", "--source", "notanip"), "not an IPv4 or IPv6 address"),
        (("publish", "", "hi"), "the topic is empty"),
        (("subscribe", ""), "the topic is empty"),
        (("request", "t" * 256), "the limit is 255"),
        (("serve", "", "--reply", "x"), "the topic is empty"),
    ],
)
def test_values_refused_where_they_are_parsed(args: tuple[str, ...], needle: str) -> None:
    """Issue 25, item 9: each was accepted (and failed later, or silently matched nothing)."""
    result = mcast(*args)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_demo_fails_loudly_when_peers_never_answer() -> None:
    # One node expecting a peer that never comes: exit 1 after the deadline, not a hang.
    result = mcast("demo", "--iface", "lo", "--expect", "1", "--duration", "0.5")
    assert result.returncode == 1
    assert "not every node" in result.stderr


def test_send_stdin_lines_to_listen_with_json() -> None:
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "listen",
            "239.255.60.1:5600",
            "--iface",
            "lo",
            "--count",
            "3",
            "--timeout",
            "10",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stderr is not None
    assert "listening on" in listener.stderr.readline()
    sent = mcast("send", "239.255.60.1:5600", "-", "--iface", "lo", "--json", stdin="a\nbb\nccc\n")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["datagrams"] == 3
    out, _ = listener.communicate(timeout=20)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in records[:3]] == ["a", "bb", "ccc"]
    assert records[3]["summary"]["datagrams"] == 3
    assert listener.returncode == 0


def test_listen_times_out_with_exit_1_and_a_hint() -> None:
    result = mcast("listen", "239.255.60.2:5601", "--iface", "lo", "--timeout", "0.3")
    assert result.returncode == 1
    assert "nothing arrived" in result.stderr


def test_listen_partial_count_exits_3() -> None:
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "listen",
            "239.255.60.3:5602",
            "--iface",
            "lo",
            "--count",
            "5",
            "--timeout",
            "2",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stderr is not None and "listening" in listener.stderr.readline()
    assert mcast("send", "239.255.60.3:5602", "x", "--iface", "lo", "--count", "2").returncode == 0
    listener.communicate(timeout=20)
    assert listener.returncode == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "10.0.0.1:5000", "x"], "unicast address"),
        (["send", "239.1.1.1", "x"], "no port given"),
        (["listen", "239.1.1.1:5000", "--iface", "nope9"], "no interface 'nope9'"),
        (["send", "255.255.255.255:5000", "x"], "--broadcast"),
        (["send", "239.1.1.1:5000", "x", "--ttl", "999", "--iface", "lo"], "TTL 999"),
        (["listen", "239.1.1.1:5000", "--source", "::1", "--iface", "lo"], "IPv6"),
        (["addr", "192.168.1.1"], "unicast"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = mcast(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_addr_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["addr", "239.1.2.3", "[ff02::fb]:5353", "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["mac"] == "01:00:5e:01:02:03" and len(first["mac_shared_groups"]) == 31
    assert second["well_known"] == "mDNS" and second["scope"] == "link-local"


def test_addr_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["addr", "224.0.0.5"]) == 0
    out = capsys.readouterr().out
    assert "OSPF" in out and "no, stays on the link" in out and "01:00:5e:00:00:05" in out


def test_ifaces_json_lists_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ifaces", "--json"]) == 0
    interfaces = json.loads(capsys.readouterr().out)
    lo = next(i for i in interfaces if i["name"] == "lo")
    assert lo["loopback"] and "127.0.0.1/8" in lo["ipv4"]


def test_version_and_help() -> None:
    assert mcast("--version").stdout.startswith("mcastkit ")
    help_text = mcast("--help").stdout
    for command in ("demo", "addr", "ifaces", "send", "listen"):
        assert command in help_text


def test_ping_ndjson_streams_snapshots_then_a_summary() -> None:
    args = [
        "ping",
        "239.255.60.9:5609",
        "--iface",
        "lo",
        "--interval",
        "0.05",
        "--unicast-port",
        "0",
        "--ndjson",
    ]
    other = subprocess.Popen(
        [sys.executable, "-m", "mcastkit", *args, "--count", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    result = mcast(*args, "--count", "30")
    other.communicate(timeout=30)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stderr
    assert [next(iter(line)) for line in lines[:-1]] == ["snapshot"] * (len(lines) - 1)
    assert len(lines) >= 3
    summary = lines[-1]
    assert summary["ok"] and summary["peers"][0]["multicast"]["received"] > 10


def test_reliable_publish_of_a_file_reaches_a_subscriber_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import os

    data = os.urandom(2_000_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    group = ("--group", "239.255.90.8:5908")
    subscriber = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "subscribe",
            "blob",
            "--count",
            "2",
            "--json",
            "--timeout",
            "20",
            *group,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = mcast(
            "publish",
            "blob",
            "--reliable",
            "--file",
            str(path),
            "--wait",
            "5",
            "--peers",
            "1",
            "--linger",
            "0.5",
            "--json",
            *group,
        )
        assert sent.returncode == 0, sent.stderr
        summary = json.loads(sent.stdout)
        assert summary["bytes"] == len(data) and summary["reliable"]
        small = mcast("publish", "blob", "after", "--reliable", "--linger", "0.5", *group)
        assert small.returncode == 0, small.stderr
        out, err = subscriber.communicate(timeout=30)
    finally:
        subscriber.kill()
    records = [json.loads(line) for line in out.splitlines()]
    assert subscriber.returncode == 0, err
    assert records[0]["size"] == len(data)
    assert records[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert records[1]["text"] == "after" and records[1]["reliable"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "/nonexistent"], "needs --reliable"),
        (["--reliable", "--file", "/nonexistent/x"], "cannot read /nonexistent/x"),
        (["x", "--reliable", "--rate", "fast"], "rate 'fast' not understood"),
        (["x", "--reliable", "--max-message", "lots"], "size 'lots' not understood"),
        (["this is longer", "--reliable", "--max-message", "10"], "exceeds max_message"),
    ],
)
def test_reliable_publish_bad_input_is_a_clear_error(args: list[str], message: str) -> None:
    result = mcast("publish", "t", *args, "--group", "239.255.90.9:5909", "--linger", "0")
    assert result.returncode == 2  # bad input, always 2 (was: anything but 0)
    assert message in result.stderr


@pytest.mark.parametrize(("signum", "code"), [(2, 130), (15, 143)])
def test_publish_from_an_open_stdin_ends_on_a_signal_with_its_code(signum: int, code: int) -> None:
    """Issue 25, item 9: ``publish t -`` read all of stdin first, so a signal waited for EOF
    and the command then exited 0. Lines now go out as they come."""
    import signal as signals
    import time

    group = "239.255.59.1:5590"
    sub = subprocess.Popen(
        [sys.executable, "-m", "mcastkit", "subscribe", "t", "--count", "1", "--group", group,
         "--iface", "lo", "--timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pub = subprocess.Popen(
        [sys.executable, "-m", "mcastkit", "publish", "t", "-", "--group", group, "--iface",
         "lo", "--wait", "5", "--peers", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert pub.stdin is not None
    pub.stdin.write("first line\n")
    pub.stdin.flush()
    out, _ = sub.communicate(timeout=30)  # arrived while the publisher's stdin is still open
    assert "first line" in out
    time.sleep(0.2)
    pub.send_signal(signals.Signals(signum))
    # Wait with stdin still open: communicate() would close it, and an EOF arriving with the
    # signal may end the command first, with 0 (seen once in a CI run).
    pub.wait(timeout=10)
    assert pub.stderr is not None
    err = pub.stderr.read()
    pub.stdin.close()
    assert pub.returncode == code, err
    assert "published 1 message(s)" in err


def test_rich_output_into_a_closed_pipe_is_a_broken_pipe_not_an_exit_1() -> None:
    """Issue 25, item 9: rich ends a program with exit 1 when its stdout closes (its own
    broken-pipe handling); the tables of doctor and ping go through ``output.console``,
    which hands the entry point a BrokenPipeError instead (exit 0: a closed stdout is not an
    error). More than a pipe's buffer is written, so the pipe really is found closed."""
    import os

    code = (
        "import sys\n"
        "from mcastkit.cli.output import console\n"
        "out = console(width=200)\n"
        "try:\n"
        "    for _ in range(4000):\n"
        "        out.print('x' * 150)\n"
        "except BrokenPipeError:\n"
        "    sys.exit(0)\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", code], stdout=write_end, timeout=30)
    finally:
        os.close(write_end)
    assert done.returncode == 0


def test_small_truths_of_the_first_hour() -> None:
    """Issue 25, item 10: what the commands say is what they do."""
    from mcastkit.cli.bench import _article, _count
    from mcastkit.cli.dump import _line

    assert _count(1, "datagram") == "1 datagram" and _count(1200, "datagram") == "1,200 datagrams"
    assert f"{_article('iperf2')} iperf2" == "an iperf2" and _article("raw") == "a"
    record = {
        "time": 0.0, "source": "fd00::1", "source_port": 5000, "destination": "ff15::1",
        "size": 3, "ttl": 1, "decoded": {"kind": "raw"},
    }  # fmt: skip
    assert "[fd00::1]:5000 -> [ff15::1] " in _line(record, b"abc")
    excluded = mcast("listen", "239.255.58.1:5580", "--iface", "lo", "--exclude", "127.0.0.9",
                     "--timeout", "0.3")  # fmt: skip
    assert "any source but 127.0.0.9" in excluded.stderr
    too_long = mcast("send", "239.255.58.1:5580", "-", "--iface", "lo", stdin="x" * 70000)
    assert too_long.returncode == 2 and "65,507" in too_long.stderr, too_long.stderr
