"""The Wireshark dissector shipped in the package, run by Debian's tshark on a capture that
`mcast dump --pcap` wrote of real traffic: every kind of datagram, and a truncated one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ISOLATED
from netlab import require_tool, wait_for_line

MCAST = [sys.executable, "-m", "mcastkit"]
GROUP = "239.255.96.11:5971"
FIELDS = (
    "mcastkit.kind",
    "mcastkit.type",
    "mcastkit.topic",
    "mcastkit.payload_len",
    "mcastkit.rdata.message_length",
    "mcastkit.rdata.offset",
    "mcastkit.bench.seq",
    "mcastkit.ping.kind",
    "mcastkit.ping.path",
    "mcastkit.ping.seq",
    "mcastkit.transfer.kind",
    "mcastkit.transfer.block",
    "mcastkit.sealed.key_id",
    "_ws.expert.message",
)
net = pytest.mark.skipif(not ISOLATED, reason="needs the private network namespace")


def _mcast(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MCAST, *args], capture_output=True, text=True, timeout=timeout)


def _plugin() -> str:
    shown = _mcast("dump", "--wireshark-plugin", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert Path(info["plugin"]).is_file() and info["install"][1][0] == "cp"
    return str(info["plugin"])


def _capture(pcap: Path, tmp_path: Path) -> str:
    """Real traffic of every kind on the group, as `mcast dump` saw and wrote it; the key id."""
    key = tmp_path / "group.key"
    key_id = json.loads(_mcast("keygen", "--json", str(key)).stdout)["key_id"]
    data = tmp_path / "file.bin"
    data.write_bytes(os.urandom(5000))
    (tmp_path / "into").mkdir()
    on = ("--group", GROUP, "--iface", "lo")
    dump = subprocess.Popen(
        [*MCAST, "dump", GROUP, "--iface", "lo", "--pcap", str(pcap), "--timeout", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(dump.stderr, "dumping")
        _mcast("publish", "news", "hello", *on, "--wait", "0")
        _mcast("publish", "big", "x" * 5000, "--reliable", *on)
        _mcast("bench", "send", GROUP, "--iface", "lo", "--rate", "100pps", "--duration", "0.1")
        _mcast("ping", GROUP, "--iface", "lo", "--count", "1", "--interval", "0.2")
        receiver = subprocess.Popen(
            [*MCAST, "recv-file", *on, "--dir", str(tmp_path / "into")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert _mcast("send-file", str(data), *on, "--receivers", "1").returncode == 0
        receiver.wait(timeout=30)
        _mcast("peers", *on, "--key-file", str(key), "--once", "--wait", "0.3")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:  # a truncated frame
            raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            raw.sendto(b"MK\x01\x04" + bytes(8), ("239.255.96.11", 5971))
        time.sleep(0.5)
    finally:
        dump.send_signal(2)
        dump.communicate(timeout=20)
    return key_id


@net
def test_tshark_decodes_every_kind_with_the_shipped_dissector(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    plugin = _plugin()
    pcap = tmp_path / "capture.pcap"
    key_id = _capture(pcap, tmp_path)
    fields = [argument for name in FIELDS for argument in ("-e", name)]
    done = subprocess.run(
        [tshark, "-r", str(pcap), "-X", f"lua_script:{plugin}", "-T", "fields",
         "-E", "separator=|", *fields],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [dict(zip(FIELDS, line.split("|"), strict=True)) for line in done.stdout.splitlines()]
    kinds = {row["mcastkit.kind"] for row in rows}
    assert kinds >= {"mcastkit", "mcastkit-sealed", "mcast-bench", "mcast-ping", "mcast-transfer"}
    data = [r for r in rows if r["mcastkit.type"] == "4" and r["mcastkit.topic"] == "news"]
    assert [r["mcastkit.payload_len"] for r in data] == ["5"]  # "hello"
    fragments = [r for r in rows if r["mcastkit.type"] == "7" and r["mcastkit.topic"] == "big"]
    assert {r["mcastkit.rdata.message_length"] for r in fragments} == {"5000"}
    assert fragments[0]["mcastkit.rdata.offset"] == "0" and len(fragments) >= 4
    bench = [int(r["mcastkit.bench.seq"]) for r in rows if r["mcastkit.kind"] == "mcast-bench"]
    assert bench == list(range(len(bench))) and bench
    probes = [r for r in rows if r["mcastkit.kind"] == "mcast-ping"]
    assert probes[0]["mcastkit.ping.kind"] == "1" and probes[0]["mcastkit.ping.path"] == "1"
    transfer = {r["mcastkit.transfer.kind"] for r in rows if r["mcastkit.kind"] == "mcast-transfer"}
    assert {"1", "4"} <= transfer  # announce, data
    blocks = {r["mcastkit.transfer.block"] for r in rows if r["mcastkit.transfer.kind"] == "4"}
    assert "0" in blocks
    sealed = {r["mcastkit.sealed.key_id"] for r in rows if r["mcastkit.kind"] == "mcastkit-sealed"}
    assert sealed == {f"0x{key_id}"}
    truncated = [r for r in rows if "Truncated" in r["_ws.expert.message"]]
    assert len(truncated) == 1 and truncated[0]["mcastkit.type"] == ""


def test_dump_without_a_group_or_the_plugin_flag_is_a_usage_error() -> None:
    done = _mcast("dump")
    assert done.returncode == 2 and "--wireshark-plugin" in done.stderr
