"""Socket runtimes for the diagnostics: the one driver (transport/driver.py) runs each core."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ..addr import GroupSpec
from ..errors import MulticastError
from ..pacing import TokenBucket
from ..peers import Address, random_id
from ..transport import (
    GroupSocket,
    IfaceChoice,
    Interface,
    enable_packet_info,
    open_receiver,
    open_sender,
    set_unicast_ttl,
)
from ..transport.batch import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, BatchReceiver, BatchSender
from ..transport.capture import open_capture
from ..transport.driver import STOP, Driver
from ..transport.handles import bind_any, connected_send, nonblocking
from ..transport.interfaces import resolve_interface
from .bench import HEAD as BENCH_HEAD
from .bench import IPERF_CLOSE, IPERF_HEAD, MIN_SIZE, BenchStats, Rate, make_payload
from .bench import MAGIC as BENCH_MAGIC
from .ping import PingSession
from .top import TopView

__all__ = ["PingOptions", "run_bench_recv", "run_bench_send", "run_ping", "run_top"]

MAX_PEERS_HEARD = 1024  # peer hosts whose interface ping remembers (it answers by it)


def _unicast_socket(
    spec: GroupSpec, interface: Interface, ttl: int, port: int, loopback: bool
) -> GroupSocket:
    """Sends everything out of ``interface`` (so peers learn where to answer) and receives
    unicast answers."""
    local: IPv4Address | IPv6Address | None = interface.ipv4_address
    if spec.family == 6:
        globals_ = [a.ip for a in interface.ipv6 if not a.ip.is_link_local]
        local = globals_[0] if globals_ else None
    source = None
    if local is not None:
        source = f"{local}:{port}" if spec.family == 4 else f"[{local}]:{port}"
    return _ping_socket(spec, interface, ttl, loopback, source, port)


def _ping_socket(
    spec: GroupSpec, interface: Interface, ttl: int, loopback: bool, source: str | None, port: int
) -> GroupSocket:
    """A non-blocking socket out of ``interface`` bound to ``source`` (None: the wildcard,
    for an interface with only link-local IPv6), with the unicast TTL and the packet info
    ping reads."""
    sender = open_sender(spec, iface=interface.index, ttl=ttl, source=source, loopback=loopback)
    if source is None:
        bind_any(sender, 6, port)
    set_unicast_ttl(sender, spec.family, ttl)
    enable_packet_info(sender, spec.family)
    nonblocking(sender)
    return sender


def _link_local_socket(
    spec: GroupSpec, interface: Interface, ttl: int, port: int, loopback: bool
) -> GroupSocket | None:
    """Where an IPv6 interface also has a global address (the probes' source), a socket on
    its link-local address: a peer pinned as ``[fe80::...%eth0]`` probes there, and is
    answered from there."""
    if spec.family != 6 or not any(not a.ip.is_link_local for a in interface.ipv6):
        return None
    local = next((a.ip for a in interface.ipv6 if a.ip.is_link_local), None)
    if local is None:
        return None
    source = f"[{local}%{interface.index}]:{port}"
    try:
        return _ping_socket(spec, interface, ttl, loopback, source, port)
    except MulticastError:
        return None  # the probes still leave from the global address; only this is lost


@dataclass(frozen=True)
class PingOptions:
    """How ``run_ping`` pings: the options of ``mcast ping``.

    Probes go every ``interval`` seconds on each path (multicast, and unicast to the peers
    found and those ``peers`` pinned), ``count`` rounds or for ``duration`` seconds (None:
    until stopped). Answers come to ``unicast_port`` (the group's by default). ``loopback``
    off (the default) keeps our own probes and answers from being copied back to us: each
    copy would wake the loop just as a peer's answer is due and inflate the RTT. On ``lo``
    itself, pings on one host still meet (the datagram really goes out and back in).
    """

    iface: IfaceChoice = None
    interval: float = 1.0
    duration: float | None = None
    count: int | None = None
    ttl: int = 64
    peers: tuple[Address, ...] = ()
    unicast_port: int | None = None
    loopback: bool = False


class _PingWays:
    """Ping's sockets: the group's, one unicast socket per interface (probes leave by each,
    a peer is answered by the one it was heard on: a host on two of our links is two paths,
    each with its own figures), and the link-local ones only heard on (and answered from)."""

    def __init__(self, spec: GroupSpec, options: PingOptions, counters: Counter[str]) -> None:
        ttl, loopback = options.ttl, options.loopback
        self.counters = counters  # the session's: send errors are counted beside its own
        self.group = open_receiver(
            spec, iface=options.iface, ttl=ttl, blocking=False, loopback=loopback
        )
        self.unicasts: list[GroupSocket] = []
        self.link_locals: list[GroupSocket] = []
        try:
            port = spec.port if options.unicast_port is None else options.unicast_port
            for interface in self.group.interfaces:
                self.unicasts.append(_unicast_socket(spec, interface, ttl, port, loopback))
            for interface in self.group.interfaces:
                opened = _link_local_socket(spec, interface, ttl, port, loopback)
                if opened is not None:
                    self.link_locals.append(opened)
        except BaseException:
            self.close()
            raise
        self.by_index = {u.interface.index: u for u in self.unicasts}
        self.heard_on: dict[str, GroupSocket] = {}  # peer host -> the socket of its interface

    def send(self, datagrams: list[tuple[bytes, Address | None]]) -> None:
        for data, destination in datagrams:
            if destination is None:
                ways = self.unicasts
            else:
                ways = [self.heard_on.get(destination[0], self.unicasts[0])]
            for way in ways:
                try:
                    way.send(data, destination)
                except OSError:
                    self.counters["send-errors"] += 1

    def drain(self, sock: GroupSocket, session: PingSession) -> None:
        while (packet := sock.recv_nowait()) is not None:
            way = sock if sock is not self.group else self.by_index.get(packet.ifindex or 0)
            if way is not None and len(self.heard_on) < MAX_PEERS_HEARD:
                self.heard_on[packet.source] = way
            source = (packet.source, packet.source_port)
            session.receive_datagram(packet.data, source, time.monotonic(), packet.ttl)

    @property
    def all(self) -> list[GroupSocket]:
        return [self.group, *self.unicasts, *self.link_locals]

    def close(self) -> None:
        for opened in self.all:
            opened.close()


def run_ping(
    spec: GroupSpec,
    options: PingOptions = PingOptions(),
    *,
    on_update: Callable[[PingSession, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Ping the group until ``count`` rounds, ``duration`` seconds, or ``stop()``;
    ``on_update`` gets the session every 0.5 s."""
    start = time.monotonic()
    session = PingSession(
        random_id(os.urandom),
        now_ns=int(start * 1e9),
        interval_ns=int(options.interval * 1e9),
        ttl=options.ttl,
        pinned=list(options.peers),
        count=options.count,
    )
    ways = _PingWays(spec, options, session.counters)
    interval = options.interval
    end = None if options.duration is None else start + options.duration
    last_round: float | None = None
    last_update = start

    def turn(now: float) -> float | None:
        nonlocal last_round, last_update
        if (end is not None and now >= end) or (stop is not None and stop()):
            return STOP
        if session.probed_all:
            # Every probe is out: wait one more interval for the answers, then stop.
            last_round = last_round or now
            if now >= last_round + interval:
                return STOP
        if on_update is not None and now - last_update >= 0.5:
            last_update = now
            on_update(session, int(now * 1e9))
        return interval if end is None else end - now

    try:
        with Driver() as driver:
            for sock in ways.all:
                driver.on_readable(sock, functools.partial(ways.drain, sock, session))
            driver.host(session, ways.send, turn)
    finally:
        ways.close()
    summary = session.summary(int(time.monotonic() * 1e9), final=True)
    summary.update(
        group=str(spec),
        interface=ways.group.interface.name,
        interfaces=[i.name for i in ways.group.interfaces],
        ttl=options.ttl,
        rounds=session.rounds,
    )
    return summary


def run_bench_send(
    spec: GroupSpec,
    *,
    rate: Rate | None,
    size: int,
    duration: float,
    iface: str | int | None = None,
    ttl: int = 1,
    on_second: Callable[[dict[str, Any]], None] | None = None,
    gso: bool = False,
    iperf2: bool = False,
) -> dict[str, Any]:
    """Send bench datagrams at ``rate`` (None: as fast as possible) for ``duration`` s;
    ``gso`` sends them in UDP GSO batches (one system call per batch) where the kernel can.
    ``iperf2``: iperf2's UDP header instead of ours (ids from 1, the wall clock's seconds and
    microseconds) and its closing datagram (the next id, negated), as ``iperf -c GROUP -u``
    sends them: an ``iperf -s -u -B GROUP`` receiver measures loss and jitter."""
    if size < MIN_SIZE or size > 65507:
        raise ValueError(f"--size must be {MIN_SIZE}-65507 bytes")
    # Both heads take (tag, sequence number, time): ours (magic, seq, monotonic ns), iperf2's
    # (nothing, id, seconds << 32 | microseconds: the two 32-bit fields it reads).
    head, tag, first, mask = (
        (IPERF_HEAD, b"", 1, 0x7FFFFFFF) if iperf2 else (BENCH_HEAD, BENCH_MAGIC, 0, (1 << 64) - 1)
    )
    sender = open_sender(spec, iface=iface, ttl=ttl, sndbuf=4 << 20)
    pps = None if rate is None else rate.packets_per_second(size)
    batch = BatchSender(sender, gso=gso)
    per_call = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size)) if batch.gso else 1
    buffer = bytearray(make_payload(0, 0, size) * per_call)
    view = memoryview(buffer)
    segments = [view[n * size : (n + 1) * size] for n in range(per_call)]
    if iperf2:
        buffer[:] = bytes(len(buffer))  # after iperf2's 16-byte header, zeros: no options
    pack_into = head.pack_into
    # A connected socket skips the address conversion sendto() does per call (iperf2 connects
    # too), which is most of Python's own cost per datagram here.
    send = connected_send(sender, sender.destination)
    destination = sender.destination
    sent = 0
    errors: Counter[str] = Counter()  # by errno name: a full queue is not a firewall
    start = time.monotonic_ns()
    end = start + int(duration * 1e9)
    second_start, second_sent = start, 0
    # 2 ms of the rate at most (a sleep overshoots by a fraction of that), 256 datagrams.
    depth = 256.0 if pps is None else max(1.0, min(256.0, pps * 0.002))
    bucket = TokenBucket(pps, depth, start / 1e9, full=True)
    try:
        while True:
            now = time.monotonic_ns()
            if now >= end:
                break
            bucket.refill(now / 1e9)
            owed = bucket.take(1, 256)
            if not owed:
                time.sleep(bucket.wait(1))
                continue
            stamp = now if not iperf2 else _iperf_time()
            if batch.gso:
                count = min(owed, per_call)
                for n in range(count):
                    pack_into(buffer, n * size, tag, (sent + n + first) & mask, stamp)
                sent += batch.send(segments[:count], destination)
            else:
                try:
                    for seq in range(sent + first, sent + first + owed):
                        pack_into(buffer, 0, tag, seq & mask, stamp)
                        send(segments[0])
                        sent += 1
                except OSError as exc:  # ENOBUFS: the queue is full; EPERM: a firewall
                    errors[errno.errorcode.get(exc.errno or 0, "?")] += 1  # keep pacing
            if now - second_start >= 1_000_000_000:
                if on_second is not None:
                    seconds = (now - second_start) / 1e9
                    on_second(
                        {
                            "t": round((now - start) / 1e9, 3),
                            "pps": round((sent - second_sent) / seconds, 1),
                            "mbps": round((sent - second_sent) * size * 8 / seconds / 1e6, 3),
                        }
                    )
                second_start, second_sent = now, sent
        if iperf2:  # the end of the test: the next id, negated (iperf2 sends one)
            closing = IPERF_CLOSE.pack(-((sent + 1) & mask), *divmod(_iperf_time(), 1 << 32), -1)
            with contextlib.suppress(OSError):
                send(closing + bytes(size - len(closing)))
    finally:
        sender.close()
    elapsed = (time.monotonic_ns() - start) / 1e9
    for key, count in batch.counters.items():
        if key.startswith("dropped:"):
            errors[key.removeprefix("dropped:")] += count
    return {
        "group": str(spec),
        "interface": sender.interface.name,
        "size": size,
        "packets": sent,
        "send_errors": sum(errors.values()),
        "send_errors_by": dict(errors),
        "seconds": round(elapsed, 4),
        "pps": round(sent / elapsed, 1),
        "mbps": round(sent * size * 8 / elapsed / 1e6, 3),
        "offered_pps": None if pps is None else round(pps, 1),
        "gso": batch.gso,
        "format": "iperf2" if iperf2 else "mcastkit",
    }


def _iperf_time() -> int:
    """The wall clock as iperf2 stamps it: seconds in the high 32 bits, microseconds low."""
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    return (seconds & 0xFFFFFFFF) << 32 | micros


def run_bench_recv(
    spec: GroupSpec,
    *,
    iface: str | int | None = None,
    sources: list[str] | None = None,
    duration: float | None = None,
    idle: float = 2.0,
    wait: float | None = None,
    rcvbuf: int = 8 << 20,
    on_second: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Count bench (or iperf2) datagrams until ``duration``, ``idle`` s of silence, or stop()."""
    receiver = open_receiver(
        spec, iface=iface, sources=sources or (), rcvbuf=rcvbuf, blocking=False
    )
    stats = BenchStats()
    # Datagrams come in batches (recvmmsg, or coalesced by GRO) and are measured in place:
    # one system call and one clock reading per batch, not per datagram.
    batch = BatchReceiver(receiver)
    on_datagram = stats.on_datagram

    def measure(
        buffer: memoryview, spans: list[tuple[int, int]], _source: object, drops: int | None
    ) -> None:
        now_ns, wall_ns = time.monotonic_ns(), time.time_ns()
        for begin, end in spans:
            on_datagram(buffer[begin:end], now_ns, wall_ns, drops)

    start = time.monotonic_ns()
    hard_end = None if duration is None else start + int(duration * 1e9)
    first_wait_end = None if wait is None else start + int(wait * 1e9)

    def turn(_: float) -> float | None:
        now = time.monotonic_ns()
        if (hard_end is not None and now >= hard_end) or (stop is not None and stop()):
            return STOP
        if stats.packets == 0 and first_wait_end is not None and now >= first_wait_end:
            return STOP
        if stats.packets and now - stats.last_ns > idle * 1e9:
            return STOP
        for interval in stats.tick(now):
            if on_second is not None:
                on_second(interval)
        return 0.1

    try:
        with Driver() as driver:
            driver.read_runs(batch, measure, 4096)
            driver.run(turn)
    finally:
        receiver.close()
    summary = stats.summary()
    summary.update(
        {"group": str(spec), "interface": receiver.interface.name, "rcvbuf": receiver.rcvbuf}
    )
    if summary["kernel_drops"]:
        summary["warning"] = (
            f"the kernel dropped {summary['kernel_drops']} datagrams: the receive buffer "
            f"({receiver.rcvbuf} bytes) overflowed; raise it (--rcvbuf, net.core.rmem_max) "
            "or lower the rate"
        )
    return summary


def run_top(
    iface: str | int | None = None,
    *,
    interval: float = 1.0,
    duration: float | None = None,
    count: int | None = None,
    on_snapshot: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Capture on ``iface`` (default: the interface of the multicast route) and hand a
    snapshot of its groups to ``on_snapshot`` every ``interval`` s, until ``count``
    snapshots, ``duration`` s, or ``stop()``; the last snapshot is returned."""
    interface = resolve_interface(iface, 4, require_multicast=False)
    capture = open_capture(interface)
    view = TopView()
    start = time.monotonic()
    end = None if duration is None else start + duration
    due = start + interval
    shown = taken = 0
    last: dict[str, Any] = {}

    def drain() -> None:
        now = time.monotonic()
        for packet in capture.read():
            view.on_packet(packet, now)

    def take(now: float) -> None:
        nonlocal shown, taken, last
        last = view.snapshot(now, events_after=shown)
        if last["events"]:
            shown = last["events"][-1]["n"]
        for event in last["events"]:  # the loop's clock to seconds ago, for people
            event["seconds_ago"] = round(now - event.pop("time"), 1)
        last.update(
            {
                "interface": interface.name,
                "time": round(time.time(), 3),
                "capture_drops": capture.update_drops(),
            }
        )
        taken += 1
        if on_snapshot is not None:
            on_snapshot(last)

    def turn(_: float) -> float | None:
        nonlocal due
        now = time.monotonic()
        finished = (end is not None and now >= end) or (stop is not None and stop())
        if now >= due or finished:
            due = now + interval
            take(now)
        if finished or (count is not None and taken >= count):
            return STOP
        return max(0.0, min(due, end or due) - now)

    try:
        with Driver() as driver:
            driver.on_readable(capture, drain)
            driver.run(turn)
    finally:
        capture.close()
    return last
