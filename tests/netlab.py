"""Test hosts on one machine: network namespaces joined by veth pairs to a bridge.

Every name carries this process's id and a counter, so parallel runs and reruns never clash, and
everything made is removed again. Runs only inside the suite's private network namespace (see
conftest.py): nothing here can reach a real interface.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

_counter = itertools.count(1)
PYTHON = sys.executable


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its text output."""
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Host:
    """A network namespace with one interface, ``eth0``, on the lab's bridge."""

    name: str
    ipv4: str
    ipv6: str

    def exec_args(self, *args: str) -> list[str]:
        """Argument list that runs ``args`` inside this host."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host and wait for it."""
        return subprocess.run(
            self.exec_args(*args), capture_output=True, text=True, timeout=timeout, check=check
        )

    def mcast(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``mcast ARGS`` on this host and wait for it."""
        return self.run(PYTHON, "-m", "mcastkit", *args, timeout=timeout)

    def mcast_fed(
        self, text: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``mcast ARGS`` on this host with ``text`` on its stdin, and wait for it."""
        return subprocess.run(
            self.exec_args(PYTHON, "-m", "mcastkit", *args),
            input=text,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start a command on this host in the background (stdout and stderr piped)."""
        return subprocess.Popen(
            self.exec_args(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def start_mcast(self, *args: str) -> subprocess.Popen[str]:
        """Start ``mcast ARGS`` on this host in the background."""
        return self.start(PYTHON, "-m", "mcastkit", *args)

    def python(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet on this host."""
        return self.run(PYTHON, "-c", code, timeout=timeout)


def wait_for_line(stream: object, needle: str, timeout: float = 10.0) -> str:
    """Read lines from a pipe until one contains ``needle``; fail after ``timeout`` seconds.

    Reads the file descriptor a byte at a time: a buffered readline could swallow the lines
    after the needle, where a later select() would not see them.
    """
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    fd = stream.fileno()  # type: ignore[attr-defined]
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
        if byte != b"\n":
            continue
        text, line = line.decode(errors="replace"), b""
        seen.append(text)
        if needle in text:
            return text
    raise AssertionError(f"{needle!r} not seen within {timeout}s; got: {''.join(seen)!r}")


@dataclass
class Lab:
    """A bridge (one LAN segment) and the hosts on it."""

    tag: str = field(default_factory=lambda: f"mk{os.getpid() % 100000}x{next(_counter)}")
    hosts: list[Host] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        """The bridge device's name (at most 15 characters)."""
        return f"{self.tag}br"[-15:]

    def _no_dad(self, *netns: str) -> None:
        """No duplicate address detection, so IPv6 addresses (link-local included) are
        usable at once: on the host (for the bridge ports) or in ``netns``."""
        where = ["ip", "netns", "exec", *netns] if netns else []
        for key in ("all", "default"):
            sh(*where, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")

    def _namespace(self, name: str) -> None:
        """A network namespace of this lab, loopback up, without DAD."""
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self._no_dad(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _bridge(self, name: str) -> str:
        """A bridge (no IGMP snooping: it floods multicast like a plain switch), up."""
        sh("ip", "link", "add", name, "type", "bridge", "mcast_snooping", "0")
        self.links.append(name)
        sh("ip", "link", "set", name, "up")
        return name

    def _plug(self, bridge: str, port: str, netns: str, inner: str, ipv4: str, ipv6: str) -> None:
        """A veth pair: ``port`` on ``bridge``, ``inner`` in ``netns`` with the addresses
        (CIDR), both up."""
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", inner, "netns", netns)
        self.links.append(port)
        sh("ip", "link", "set", port, "master", bridge)
        sh("ip", "link", "set", port, "up")
        sh("ip", "-n", netns, "addr", "add", ipv4, "dev", inner)
        sh("ip", "-n", netns, "addr", "add", ipv6, "dev", inner, "nodad")
        sh("ip", "-n", netns, "link", "set", inner, "up")

    def lan(self, count: int, *, wire: bool = True) -> list[Host]:
        """Make ``count`` hosts 10.88.0.N / fd88::N on one bridge, default route out of eth0.

        ``wire``: hosts cut UDP GSO batches into datagrams before their veth, as a real NIC
        puts them on the wire, so the bridge (and an nftables loss rule) sees one packet per
        datagram. Without it, a GSO batch crosses whole (same-host containers).
        """
        self._no_dad()
        self._bridge(self.bridge)
        for number in range(1, count + 1):
            host = Host(f"{self.tag}h{number}", f"10.88.0.{number}", f"fd88::{number}")
            self._namespace(host.name)
            port = f"{self.tag}p{number}"[-15:]
            self._plug(self.bridge, port, host.name, "eth0", f"{host.ipv4}/24", f"{host.ipv6}/64")
            if wire:
                ethtool = require_tool("ethtool")
                sh("ip", "netns", "exec", host.name, ethtool, "-K", "eth0",
                   "tx-udp-segmentation", "off")  # fmt: skip
            # A LAN host's default route points at its only interface: multicast follows it.
            sh("ip", "-n", host.name, "route", "add", "default", "dev", "eth0")
            self.hosts.append(host)
        return self.hosts

    def routed(self, per_subnet: int = 1) -> tuple[list[Host], Host, list[Host]]:
        """Two subnets joined by a router: ``per_subnet`` hosts on each (10.90.1.N and
        10.90.2.N, fd90:1::N and fd90:2::N, their default route via the router), and the
        router (.254 / ::fe on both, forwarding on, its links ``ra`` and ``rb``). Nothing
        routes multicast until a daemon on the router does (``smcroute``)."""
        self._no_dad()
        router = Host(f"{self.tag}r", "10.90.1.254", "fd90:1::fe")
        self._namespace(router.name)
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ):
            sh("ip", "netns", "exec", router.name, "sysctl", "-qw", f"{key}={value}")
        sides: list[list[Host]] = []
        for subnet, link in ((1, "ra"), (2, "rb")):
            bridge = self._bridge(f"{self.tag}b{subnet}"[-15:])
            self._plug(bridge, f"{self.tag}r{subnet}"[-15:], router.name, link,
                       f"10.90.{subnet}.254/24", f"fd90:{subnet}::fe/64")  # fmt: skip
            side = []
            for number in range(1, per_subnet + 1):
                name = f"{self.tag}s{subnet}h{number}"
                host = Host(name, f"10.90.{subnet}.{number}", f"fd90:{subnet}::{number}")
                self._namespace(name)
                self._plug(bridge, f"{self.tag}v{subnet}{number}"[-15:], name, "eth0",
                           f"{host.ipv4}/24", f"{host.ipv6}/64")  # fmt: skip
                # Multicast leaves by eth0: the default route is via the router.
                sh("ip", "-n", name, "route", "add", "default", "via", f"10.90.{subnet}.254")
                sh("ip", "-n", name, "-6", "route", "add", "default", "via", f"fd90:{subnet}::fe")
                side.append(host)
            sides.append(side)
        return sides[0], router, sides[1]

    def sites(self, count: int, per_site: int = 1) -> list[list[Host]]:
        """``count`` LANs (10.92.S.N, fd92:S::N, a bridge each) joined by one router (.254 /
        ::fe on every LAN, forwarding on), which routes unicast between them and no
        multicast: sites a relay must join."""
        self._no_dad()
        router = Host(f"{self.tag}x", "10.92.1.254", "fd92:1::fe")
        self._namespace(router.name)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            sh("ip", "netns", "exec", router.name, "sysctl", "-qw", f"{key}=1")
        sites: list[list[Host]] = []
        for site in range(1, count + 1):
            bridge = self._bridge(f"{self.tag}s{site}"[-15:])
            self._plug(bridge, f"{self.tag}x{site}"[-15:], router.name, f"r{site}",
                       f"10.92.{site}.254/24", f"fd92:{site}::fe/64")  # fmt: skip
            hosts = []
            for number in range(1, per_site + 1):
                host = Host(f"{self.tag}t{site}h{number}", f"10.92.{site}.{number}",
                            f"fd92:{site}::{number}")  # fmt: skip
                self._namespace(host.name)
                self._plug(bridge, f"{self.tag}y{site}{number}"[-15:], host.name, "eth0",
                           f"{host.ipv4}/24", f"{host.ipv6}/64")  # fmt: skip
                sh("ip", "-n", host.name, "route", "add", "default", "via", f"10.92.{site}.254")
                hosts.append(host)
            sites.append(hosts)
        return sites

    def dual(self, count: int = 2) -> list[Host]:
        """``count`` hosts on two LANs at once: eth0 on one bridge (10.91.1.N, fd91:1::N, and
        ``Host.ipv4``/``ipv6``), eth1 on another (10.91.2.N, fd91:2::N). No default route:
        which interface a group uses is the program's choice. Bridge ports are
        ``{tag}aN`` and ``{tag}bN`` (``dual_port``), to cut one host's link from outside."""
        self._no_dad()
        bridges = [self._bridge(f"{self.tag}d{side}"[-15:]) for side in (1, 2)]
        for number in range(1, count + 1):
            host = Host(f"{self.tag}m{number}", f"10.91.1.{number}", f"fd91:1::{number}")
            self._namespace(host.name)
            for side, (bridge, inner) in enumerate(zip(bridges, ("eth0", "eth1"), strict=True), 1):
                self._plug(bridge, self.dual_port(side, number), host.name, inner,
                           f"10.91.{side}.{number}/24", f"fd91:{side}::{number}/64")  # fmt: skip
            self.hosts.append(host)
        return self.hosts

    def dual_port(self, side: int, number: int) -> str:
        """The bridge port (outside the hosts) of host ``number``'s eth0 (side 1) or eth1."""
        return f"{self.tag}{'ab'[side - 1]}{number}"[-15:]

    def snooping_querier(self) -> None:
        """Make the ``lan`` bridge a snooping switch with a querier, querying every second."""
        sh("ip", "link", "set", self.bridge, "type", "bridge", "mcast_snooping", "1",
           "mcast_querier", "1", "mcast_query_interval", "100",
           "mcast_startup_query_interval", "100")  # fmt: skip

    def block_multicast(self, *ports: str) -> None:
        """Drop IPv4 multicast on the lab's bridges, as a cloud or overlay network does
        (unicast still passes): every frame, or only those into or out of ``ports``."""
        require_tool("nft")
        table = f"{self.tag}mc"
        if table not in self.tables:
            sh("nft", "add", "table", "bridge", table)
            sh("nft", "add", "chain", "bridge", table, "mcdrop",
               "{ type filter hook forward priority 0; }")  # fmt: skip
            self.tables.append(table)
        matches = [f"iifname {p}" for p in ports] + [f"oifname {p}" for p in ports] or [""]
        for match in matches:
            sh("nft", f"add rule bridge {table} mcdrop {match} ip daddr 224.0.0.0/4 counter drop")

    def multicast_dropped(self) -> int:
        """Packets the ``block_multicast`` rules dropped so far."""
        total = 0
        for table in self.tables:
            listing = sh("nft", "list", "table", "bridge", table).stdout
            total += sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))
        return total

    def port(self, number: int) -> str:
        """The bridge port (outside the host) of ``lan`` host ``number``."""
        return f"{self.tag}p{number}"[-15:]

    def close(self) -> None:
        """Remove every namespace, link and table this lab made."""
        for table in self.tables:
            sh("nft", "delete", "table", "bridge", table, check=False)
        for name in self.namespaces:
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", name, check=False)
        for link in self.links:
            sh("ip", "link", "del", link, check=False)


def the_message(out: str) -> dict:
    """The one message ``mcast subscribe --count 1 --json`` printed: events it adds (a
    kernel-drops count when its buffer overflowed) are not messages."""
    (record,) = [r for r in map(json.loads, out.splitlines()) if "event" not in r]
    return record


def joined_on_the_wire(group: str, port: int) -> str:
    """The start of an attacker's script (Python source): ``sock``, a socket that joined
    ``group`` on ``port`` and sends to it with TTL 1; ``socket``, ``struct`` and ``time``."""
    return f"""
import socket, struct, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("{group}", {port}))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton("{group}") + socket.inet_aton("0.0.0.0"))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
"""


def loopback_listener(group: str, port: int) -> socket.socket:
    """A plain socket that joined ``group`` on lo and listens on ``port``: what any host on
    the path sees, with no mcastkit in between."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((group, port))
    membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    return listener


def require_tool(name: str) -> str:
    """Path of a third-party tool, or skip saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/test.sh installs it as root)")
    return path


def nft_drop(host: Host, rule: str) -> None:
    """Add an input-hook drop rule on ``host`` (e.g. 'ip daddr 239.0.0.0/8 drop')."""
    require_tool("nft")
    for command in (
        "add table inet mktest",
        "add chain inet mktest in { type filter hook input priority 0; }",
        f"add rule inet mktest in {rule}",
    ):
        done = host.run("nft", command)
        assert done.returncode == 0, done.stderr
