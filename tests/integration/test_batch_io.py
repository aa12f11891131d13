"""Batched datagram I/O on real sockets: UDP GSO sends, GRO and recvmmsg receives, fallbacks.

What leaves a GSO send must arrive as the same datagrams, byte for byte and in order, whether
the receiver takes them coalesced (GRO), in recvmmsg batches, or one by one; a kernel that
refuses GSO must cost nothing but speed.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

import pytest

from mcastkit.transport import mmsg
from mcastkit.transport.batch import BatchReceiver, BatchSender, gso_supported
from mcastkit.transport.platform import CAPS

SO_NO_CHECK = 11  # the kernel refuses UDP GSO on a socket without checksums (EINVAL)


def _pair(family: int) -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.bind((host, 0))
    receiver.setblocking(False)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.setblocking(False)
    return sender, receiver, receiver.getsockname()[:2]


def _datagrams(count: int, size: int, *, short_last: bool = True) -> list[bytes]:
    out = [index.to_bytes(4, "big") + os.urandom(size - 4) for index in range(count)]
    if short_last:
        out[-1] = out[-1][: size // 3]
    return out


def _collect(receiver: BatchReceiver, want: int, timeout: float = 5.0) -> list[bytes]:
    got: list[bytes] = []

    def handle(buffer, spans, source, drops):  # type: ignore[no-untyped-def]
        got.extend(bytes(buffer[start:end]) for start, end in spans)

    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        select.select([receiver.sock], [], [], 0.05)
        receiver.receive_runs(handle)
    return got


@pytest.mark.parametrize("multi", [True, False])
def test_a_drain_is_bounded_by_datagrams_not_by_coalesced_buffers(multi: bool) -> None:
    # A GRO buffer holds up to 64 datagrams: a limit counted in buffers let one drain hand
    # over 16,000 messages, and a Node's subscribers (10,000 deep) lost them.
    sender, raw_receiver, address = _pair(socket.AF_INET)
    batch = BatchSender(sender)
    receiver = BatchReceiver(raw_receiver, multi=multi)
    for _ in range(3):
        assert batch.send(_datagrams(64, 100, short_last=False), address) == 64
    select.select([raw_receiver], [], [], 2.0)
    time.sleep(0.05)
    handed: list[int] = []
    drains = []
    while sum(handed) < 192 and len(drains) < 100:
        drains.append(receiver.receive_runs(lambda b, spans, s, d: handed.append(len(spans)), 10))
    assert sum(handed) == 192 == sum(drains)  # what a drain returns is what it handed over
    if batch.gso and receiver.gro:
        assert max(drains) <= 10 + 64 * (32 if multi else 1)  # stops once past the limit
    sender.close()
    raw_receiver.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize(("gro", "multi"), [(True, True), (True, False), (False, True)])
def test_gso_batches_arrive_as_the_same_datagrams(family: int, gro: bool, multi: bool) -> None:
    sender, raw_receiver, address = _pair(family)
    batch = BatchSender(sender)
    assert batch.gso == gso_supported(sender)
    receiver = BatchReceiver(raw_receiver, gro=gro, multi=multi)
    sent = []
    for size in (1472, 1200, 100):  # several runs, each ending in a shorter datagram
        datagrams = _datagrams(130, size)
        assert batch.send(datagrams, address) == len(datagrams)
        sent.extend(datagrams)
    got = _collect(receiver, len(sent))
    assert got == sent
    if batch.gso:
        assert batch.counters["gso-calls"] >= 9  # 130 segments need at least 3 calls per size
    if gro and receiver.gro:
        assert receiver.counters["coalesced"] > 0  # loopback hands GSO batches over whole
    sender.close()
    raw_receiver.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_slot_that_took_a_lone_datagram_still_takes_a_coalesced_one(family: int) -> None:
    """The kernel shrinks a slot's control length to what one receive used (none for a lone
    datagram); the next receive into it must find the full length again, or a GRO buffer
    there loses its segment size and arrives as one datagram."""
    sender, raw_receiver, address = _pair(family)
    batch = BatchSender(sender)
    receiver = BatchReceiver(raw_receiver, gro=True, multi=True)
    if not (batch.gso and receiver.gro and receiver._multi is not None):
        pytest.skip("needs UDP GSO, GRO and recvmmsg")
    for round_ in range(4):
        lone = [round_.to_bytes(4, "big") + b"lone"]
        assert batch.send(lone, address) == 1
        assert _collect(receiver, 1) == lone
        run = _datagrams(8, 200, short_last=False)
        assert batch.send(run, address) == 8
        assert _collect(receiver, 8) == run
    assert receiver.counters["coalesced"] >= 4
    sender.close()
    raw_receiver.close()


def test_a_kernel_that_refuses_gso_costs_nothing_but_speed() -> None:
    sender, raw_receiver, address = _pair(socket.AF_INET)
    if not gso_supported(sender):
        pytest.skip("this kernel has no UDP_SEGMENT")
    sender.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)  # the kernel now answers EINVAL
    batch = BatchSender(sender)
    datagrams = _datagrams(100, 1000)
    assert batch.send(datagrams, address) == 100
    assert batch.gso is False and batch.counters["gso-refused"] == 1
    assert batch.counters["datagrams"] == 100 and batch.counters["gso-calls"] == 0
    assert _collect(BatchReceiver(raw_receiver), 100) == datagrams
    # Once refused, it does not try again.
    assert batch.send(datagrams, address) == 100 and batch.counters["gso-refused"] == 1


def test_a_full_socket_buffer_waits_instead_of_dropping() -> None:
    sender, raw_receiver, address = _pair(socket.AF_INET)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # EAGAIN after a few
    batch = BatchSender(sender, gso=False)
    datagrams = _datagrams(2000, 1400, short_last=False)
    assert batch.send(datagrams, address) == 2000
    assert not any(key.startswith("dropped:") for key in batch.counters), batch.counters
    got = _collect(BatchReceiver(raw_receiver), 2000)
    assert len(got) == 2000  # loopback: the receive buffer (8 MiB) held them all


def test_errors_are_counted_not_raised() -> None:
    sender, _, _ = _pair(socket.AF_INET)
    batch = BatchSender(sender, gso=False)
    # Port 0 is not a destination: the kernel refuses each datagram.
    assert batch.send([b"x" * 10] * 3, ("127.0.0.1", 0)) == 0
    assert sum(n for key, n in batch.counters.items() if key.startswith("dropped:")) == 3


def test_recvmmsg_batches_keep_each_datagrams_source() -> None:
    if not mmsg.available():
        pytest.skip("no recvmmsg")
    first, raw_receiver, address = _pair(socket.AF_INET)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for index in range(40):  # interleaved sources: every datagram starts a new run
        (first if index % 2 else second).sendto(index.to_bytes(4, "big"), address)
    time.sleep(0.1)
    seen: list[tuple[int, tuple[str, int]]] = []

    def handle(buffer, spans, source, drops):  # type: ignore[no-untyped-def]
        seen.extend((int.from_bytes(buffer[s:e], "big"), source) for s, e in spans)

    BatchReceiver(raw_receiver, gro=False).receive_runs(handle)
    assert [n for n, _ in seen] == list(range(40))
    ports = {n % 2: source[1] for n, source in seen}
    assert ports == {1: first.getsockname()[1], 0: second.getsockname()[1]}
    assert all(source[0] == "127.0.0.1" for _, source in seen)


RECEIVE_3000 = """
import json, socket
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
sock.bind(("::", 7000))
sock.settimeout(10)
print("ready", flush=True)
seen = []
try:
    while len(seen) < 3000:
        seen.append(int.from_bytes(sock.recv(2048)[:4], "big"))
    sock.settimeout(0.5)  # anything after the 3,000th is a datagram sent twice
    while True:
        seen.append(int.from_bytes(sock.recv(2048)[:4], "big"))
except TimeoutError:
    pass
print(json.dumps(seen))
"""

SEND_3000_NOWAIT = """
import json, select, socket, sys
from mcastkit.transport.batch import BatchSender
mode, host = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
sock.setblocking(False)
if mode == "refused":
    sock.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: the kernel refuses GSO (EINVAL)
batch = BatchSender(sock, gso=mode != "plain")
size = 1472 if mode == "oversize" else 1400  # over IPv6, 1,472 is over the MTU (EMSGSIZE)
pending = [n.to_bytes(4, "big") * (size // 4) for n in range(3000)]
stops = 0
while pending:
    done = batch.send_nowait(pending, (host, 7000))
    pending = pending[done:]
    if pending:
        stops += 1
        select.select([], [sock], [], 2.0)  # what an event loop's writer callback waits for
print(json.dumps({"stops": stops, "gso": batch.gso, "counters": batch.counters}))
"""


@pytest.mark.parametrize("mode", ["gso", "plain", "refused", "oversize"])
def test_an_event_loop_send_stops_at_a_full_buffer_and_loses_nothing(lab, mode: str) -> None:  # type: ignore[no-untyped-def]
    # A slow link (tbf, 20 Mbit/s) keeps datagrams queued on the sender, so its small send
    # buffer fills: send_nowait must stop there (not wait, not drop) and resume later, and
    # report exactly what went, also when GSO is refused or a segment is over the MTU and
    # the same call falls back to one by one (it once reported those as unsent, and the
    # caller sent them twice).
    sender, receiver = lab.lan(2)
    sender.run(
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "tbf",
        "rate",
        "20mbit",
        "burst",
        "32kbit",
        "latency",
        "400ms",
        check=True,
    )
    listening = receiver.start(sys.executable, "-c", RECEIVE_3000)
    assert listening.stdout is not None and "ready" in listening.stdout.readline()
    host = receiver.ipv6 if mode == "oversize" else receiver.ipv4
    done = sender.run(sys.executable, "-c", SEND_3000_NOWAIT, mode, host, timeout=60)
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    seen = json.loads(listening.communicate(timeout=30)[0])
    assert sent["stops"] > 0  # the buffer did fill
    assert not any(key.startswith("dropped:") for key in sent["counters"]), sent
    if mode == "refused" and not sent["counters"].get("gso-refused"):
        pytest.skip("no GSO here (the kernel, or MCASTKIT_WITHOUT)")
    if mode == "oversize" and not sent["counters"].get("gso-oversize"):
        pytest.skip("no GSO here (the kernel, or MCASTKIT_WITHOUT)")
    # UDP promises no order (a veth pair hands a datagram to the backlog of the CPU that
    # sends it, so two CPUs sending may reorder): the promise is each datagram exactly once.
    assert len(seen) == 3000 and sorted(seen) == list(range(3000)), (
        f"{len(seen)} received, {len(set(seen))} distinct"
    )


@pytest.mark.parametrize("multi", [True, False])
def test_only_a_watched_socket_reports_drops(multi: bool) -> None:
    # recv-file reads two sockets; only the group socket's drop counter may reach the
    # sender's rate control (a second counter would read as drops going up and down).
    seen: list[object] = []

    def handle(buffer, spans, source, drops):  # type: ignore[no-untyped-def]
        seen.append(drops)

    for watch in (True, False):
        sender, raw_receiver, address = _pair(socket.AF_INET)
        receiver = BatchReceiver(raw_receiver, gro=False, multi=multi, watch_load=watch)
        sender.sendto(b"x" * 100, address)
        select.select([raw_receiver], [], [], 1.0)
        seen.clear()
        receiver.receive_runs(handle)
        assert len(seen) == 1
        # Watched and where the kernel says (SO_MEMINFO): a count; else nothing.
        assert isinstance(seen[0], int) if watch and CAPS.meminfo else seen[0] is None


OVERSIZE_RECEIVER = r"""
import json, socket, sys, time
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.bind(("::", 7311))
sock.settimeout(3)
print("ready", flush=True)
sizes = []
try:
    while len(sizes) < 60:
        sizes.append(len(sock.recv(65535)))
except TimeoutError:
    pass
print(json.dumps(sizes), flush=True)
"""

OVERSIZE_SENDER = r"""
import json, os, socket, sys
from mcastkit.transport.batch import BatchSender
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
batch = BatchSender(sock)
sent = batch.send([os.urandom(1472) for _ in range(30)], (sys.argv[1], 7311))
sent += batch.send([os.urandom(1400) for _ in range(30)], (sys.argv[1], 7311))
print(json.dumps({"sent": sent, "gso": batch.gso, **batch.counters}))
"""


def test_gso_segments_over_the_path_mtu_go_one_by_one(lab) -> None:  # type: ignore[no-untyped-def]
    """1,472-byte datagrams over IPv6 do not fit a 1,500-byte frame: the kernel refuses
    them as GSO segments (EMSGSIZE) and they were dropped, every one, so IPv6 transfers
    never finished. They now go one by one (the kernel fragments them), and smaller runs
    keep GSO."""
    sender, receiver = lab.lan(2)
    listener = receiver.start(sys.executable, "-c", OVERSIZE_RECEIVER)
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    done = sender.run(sys.executable, "-c", OVERSIZE_SENDER, receiver.ipv6)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    sizes = json.loads(listener.communicate(timeout=10)[0].splitlines()[-1])
    assert report["sent"] == 60 and not any(k.startswith("dropped") for k in report), report
    assert sorted(sizes) == [1400] * 30 + [1472] * 30
    if report["gso"]:
        assert report["gso-oversize"] == 1 and report["gso-calls"] >= 1  # 1,400 bytes fit


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize("multi", [True, False])
def test_arrival_interface_comes_with_every_run(family: int, multi: bool) -> None:
    if multi and not mmsg.available():
        pytest.skip("no recvmmsg")
    sender, raw_receiver, address = _pair(family)
    receiver = BatchReceiver(raw_receiver, gro=False, multi=multi, arrival=True)
    for index in range(20):
        sender.sendto(index.to_bytes(4, "big"), address)
    time.sleep(0.1)
    seen: list[tuple[int, int | None]] = []

    def handle(buffer, spans, source, drops):  # type: ignore[no-untyped-def]
        seen.extend((int.from_bytes(buffer[s:e], "big"), receiver.arrival_index) for s, e in spans)

    receiver.receive_runs(handle)
    assert seen == [(n, socket.if_nametoindex("lo")) for n in range(20)]
    plain = BatchReceiver(_pair(family)[1], gro=False, multi=multi)
    assert plain.arrival_index is None  # not asked for: no control message parsed
