"""Publish/subscribe side by side: a Node (framed and sealed) vs LCM and pyzmq, same run.

One publisher and one subscriber, separate processes, on loopback inside a private network
namespace (as root the script re-executes itself under ``unshare --net``; multicast is routed
on ``lo`` there, for LCM). Each system runs as its documentation says:
- ``node``, ``node-sealed``: ``Node.publish`` / ``subscribe`` (sealed: a group key), the
  subscriber awaiting ``get``; ``node-handler``: the same with ``subscribe(topic, handler)``,
  the handler called in the receive path (as LCM calls its handler);
- ``lcm``: ``lcm.LCM("udpm://...?ttl=0&recv_buf_size=...")``, its C core with the Python
  binding, the same 4 MiB receive buffer a Node asks for (``pip install lcm``);
- ``zmq``: pyzmq PUB/SUB over TCP on 127.0.0.1, default high-water marks (``pip install pyzmq``);
- ``raw``: no messaging layer, the floor: ``socket.sendto`` to a group and a blocking
  ``recv`` loop, both in Python (what the interpreter and the kernel cost alone).

Two measurements per system and payload size (64 B, 1 KiB):
- **flood**: ``--count`` messages as fast as the publisher can; messages/s sent, the share
  delivered and messages/s received;
- **paced**: ``--rate`` messages/s for ``--seconds``; one-way latency p50/p99 (each payload
  carries its send time from CLOCK_MONOTONIC, which both processes share; the first
  ``--warmup`` seconds are not counted, for any system) and the share delivered. Every
  publisher is paced the same way, a blocking sleep until each message is due.

    python benchmarks/bench_pubsub.py [--count 200000] [--rate 10000] [--seconds 2]
        [--warmup 0.25] [--repeat 3] [--systems node,node-handler,node-sealed,lcm,zmq,raw]
        [--modes flood,paced] [--json]

Systems take turns in every round; medians of the runs are reported, with Node / LCM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from _isolation import isolate

GROUP, PORT = "239.255.92.1", 5920
SPEC = f"{GROUP}:{PORT}"
LCM_URL = "udpm://239.255.92.2:7667?ttl=0&recv_buf_size=4194304"
ZMQ_ENDPOINT = "tcp://127.0.0.1:5921"
KEY = bytes(range(32))
STAMP = struct.Struct("<qI")  # send time (ns, CLOCK_MONOTONIC), sequence number
IDLE_END = 1.0  # the subscriber stops after this long without a message
SETTLE = 0.5  # after the subscriber is ready: joins, hellos, TCP connects
NEEDS = {
    "node": None,
    "node-handler": None,
    "node-sealed": None,
    "lcm": "lcm",
    "zmq": "zmq",
    "raw": None,
}
RAW_GROUP = ("239.255.92.3", 5922)


class Tally:
    """What a subscriber saw: count, first/last arrival, latencies (ns) when paced."""

    def __init__(self, paced: bool, warmup: int = 0) -> None:
        self.paced = paced
        self.warmup = warmup  # messages whose latency is not counted
        self.count = 0
        self.first = self.last = 0
        self.latencies: list[int] = []

    def take(self, payload: bytes) -> None:
        now = time.monotonic_ns()
        self.first = self.first or now
        self.last = now
        self.count += 1
        if self.paced:
            sent, seq = STAMP.unpack_from(payload)
            if seq >= self.warmup:
                self.latencies.append(now - sent)

    def result(self) -> dict[str, object]:
        seconds = (self.last - self.first) / 1e9
        out: dict[str, object] = {"received": self.count, "seconds": seconds}
        if self.latencies:
            out.update(percentiles(self.latencies))
        return out


# Subscribers: each returns its Tally once the stream went quiet.


async def _sub_node(system: str, tally: Tally, ready: Callable[[], None]) -> None:
    from mcastkit import GroupKey, Node

    key = GroupKey(KEY) if system == "node-sealed" else None
    async with Node(SPEC, iface="lo", name="sub", key=key, heartbeat=5) as node:
        if system == "node-handler":  # called in the receive path, as LCM calls its handler
            node.subscribe("bench", lambda message: tally.take(message.payload))
            ready()
            started = time.monotonic_ns()
            while (time.monotonic_ns() - (tally.last or started)) / 1e9 < (
                IDLE_END if tally.count else 30
            ):
                await asyncio.sleep(0.05)
            return
        inbox = node.subscribe("bench")
        ready()
        while (message := await inbox.get(IDLE_END if tally.count else 30)) is not None:
            tally.take(message.payload)


def _sub_lcm(tally: Tally, ready: Callable[[], None]) -> None:
    import lcm

    bus = lcm.LCM(LCM_URL)
    bus.subscribe("bench", lambda _channel, data: tally.take(data))
    ready()
    while bus.handle_timeout(int((IDLE_END if tally.count else 30) * 1000)) > 0:
        pass


def _sub_zmq(tally: Tally, ready: Callable[[], None]) -> None:
    import zmq

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.connect(ZMQ_ENDPOINT)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    ready()
    while sub.poll(int((IDLE_END if tally.count else 30) * 1000)):
        tally.take(sub.recv())
    sub.close(linger=0)
    context.term()


def _raw_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
    return sock


def joined_socket(group: tuple[str, int]) -> socket.socket:
    """A plain socket bound to ``group`` and joined to it on lo: a subscriber with no
    messaging layer."""
    sock = _raw_socket()
    sock.bind(group)
    membership = socket.inet_aton(group[0]) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    return sock


def percentiles(nanoseconds: list[int]) -> dict[str, float]:
    """p50, p90 and p99 in µs."""
    ranked = sorted(nanoseconds)
    last = len(ranked) - 1
    return {f"p{q}_us": ranked[min(last, len(ranked) * q // 100)] / 1000 for q in (50, 90, 99)}


def _sub_raw(tally: Tally, ready: Callable[[], None]) -> None:
    sock = joined_socket(RAW_GROUP)
    ready()
    sock.settimeout(30)
    try:
        while True:
            tally.take(sock.recv(65536))
            sock.settimeout(IDLE_END)
    except TimeoutError:
        pass
    finally:
        sock.close()


# Publishers: send() for one message, then pace or flood.


def _payload(size: int, seq: int) -> bytes:
    head = STAMP.pack(time.monotonic_ns(), seq)
    return head + bytes(max(0, size - len(head)))


def _paced(size: int, count: int, rate: float) -> Iterator[tuple[bytes, bool]]:
    """Each message when it is due (a blocking sleep until then, for every system: asyncio
    sleeps in whole milliseconds, which would send bursts of ten at 10k/s), stamped as it
    goes; with it, whether the next one is not due yet (a batching sender should send now)."""
    start = time.monotonic() + 0.01
    for seq in range(count):
        wait = start + seq / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield _payload(size, seq), start + (seq + 1) / rate > time.monotonic()


async def _pub_node(system: str, size: int, count: int, rate: float | None) -> float:
    from mcastkit import GroupKey, Node

    key = GroupKey(KEY) if system == "node-sealed" else None
    async with Node(SPEC, iface="lo", name="pub", key=key, heartbeat=5) as node:
        await asyncio.sleep(SETTLE)
        start = time.monotonic()
        if rate is None:
            filler = bytes(size)
            for _ in range(count):
                await node.publish("bench", filler)
        else:
            for payload, idle in _paced(size, count, rate):
                await node.publish("bench", payload)
                if idle:  # it leaves when the loop turns; behind schedule, with the next ones
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
        return time.monotonic() - start


def _pub_blocking(
    send: Callable[[bytes], object], size: int, count: int, rate: float | None
) -> float:
    time.sleep(SETTLE)
    start = time.monotonic()
    if rate is None:
        filler = bytes(size)
        for _ in range(count):
            send(filler)
    else:
        for payload, _ in _paced(size, count, rate):
            send(payload)
    return time.monotonic() - start


def _pub_lcm(size: int, count: int, rate: float | None) -> float:
    import lcm

    bus = lcm.LCM(LCM_URL)
    return _pub_blocking(lambda data: bus.publish("bench", data), size, count, rate)


def _pub_zmq(size: int, count: int, rate: float | None) -> float:
    import zmq

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.bind(ZMQ_ENDPOINT)
    try:
        return _pub_blocking(pub.send, size, count, rate)
    finally:
        time.sleep(0.2)  # let the queue reach the subscriber before the socket goes
        pub.close(linger=1000)
        context.term()


def _subscribe(system: str, paced: bool, ready_file: str, warmup: int) -> dict[str, object]:
    tally = Tally(paced, warmup)

    def ready() -> None:
        open(ready_file, "w").close()

    if system.startswith("node"):
        asyncio.run(_sub_node(system, tally, ready))
    elif system == "lcm":
        _sub_lcm(tally, ready)
    elif system == "raw":
        _sub_raw(tally, ready)
    else:
        _sub_zmq(tally, ready)
    return tally.result()


def _publish(system: str, size: int, count: int, rate: float | None) -> float:
    if system.startswith("node"):
        return asyncio.run(_pub_node(system, size, count, rate))
    if system == "lcm":
        return _pub_lcm(size, count, rate)
    if system == "raw":
        sock = _raw_socket()
        try:
            return _pub_blocking(lambda data: sock.sendto(data, RAW_GROUP), size, count, rate)
        finally:
            sock.close()
    return _pub_zmq(size, count, rate)


def run_cell(
    system: str, size: int, count: int, rate: float | None, warmup: int = 0
) -> dict[str, object]:
    ready = f"/tmp/mcastkit-bench-pubsub-{os.getpid()}-ready"
    if os.path.exists(ready):
        os.unlink(ready)
    mode = ["--paced", "--warmup", str(warmup)] if rate is not None else []
    subscriber = subprocess.Popen(
        [sys.executable, __file__, "--role", "sub", "--system", system, "--ready", ready, *mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    elapsed = _publish(system, size, count, rate)
    out, _ = subscriber.communicate(timeout=120)
    os.unlink(ready)
    got = json.loads(out)
    received = int(got["received"])
    seconds = float(got["seconds"])
    cell: dict[str, object] = {
        "system": system,
        "size": size,
        "sent": count,
        "sent_per_s": count / elapsed,
        "received": received,
        "delivered": received / count,
        "received_per_s": received / seconds if seconds else 0.0,
    }
    for key in ("p50_us", "p90_us", "p99_us"):
        if key in got:
            cell[key] = got[key]
    return cell


def _median(cells: list[dict[str, object]], key: str) -> float | None:
    values = [float(c[key]) for c in cells if key in c]  # type: ignore[arg-type]
    return statistics.median(values) if values else None


def _route_multicast_on_lo() -> None:
    """In the private namespace only: LCM joins by the routing table, not by interface."""
    if os.environ.get("MCASTKIT_BENCH_NETNS"):
        subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
        subprocess.run(["ip", "route", "replace", "224.0.0.0/4", "dev", "lo"], check=True)


def enter_private_namespace() -> bool:
    """Go on in a private network namespace (re-executed there), multicast routed on lo;
    False, said on stderr, when not root."""
    isolate()
    if os.geteuid() != 0:
        print("needs root: it runs in a private network namespace", file=sys.stderr)
        return False
    _route_multicast_on_lo()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="messages per flood")
    parser.add_argument("--rate", type=float, default=10_000, help="messages/s when paced")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of a paced run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; medians reported")
    parser.add_argument("--sizes", default="64,1024")
    parser.add_argument("--modes", default="flood,paced", help="flood, paced or both")
    parser.add_argument("--systems", default="node,node-handler,node-sealed,lcm,zmq,raw")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.25,
        help="seconds at the start of a paced run whose latencies are not counted (a first "
        "contact, first calls): the same for every system",
    )
    args = parser.parse_args()
    logging.getLogger("mcastkit").setLevel(logging.ERROR)  # an open group here is on purpose
    if args.role == "sub":
        print(json.dumps(_subscribe(args.system, args.paced, args.ready, int(args.warmup))))
        return 0
    if not enter_private_namespace():
        return 2
    systems = []
    for system in args.systems.split(","):
        module = NEEDS.get(system, "?")
        if module == "?":
            print(f"unknown system {system!r}: one of {', '.join(NEEDS)}", file=sys.stderr)
            return 2
        if module is None or importlib.util.find_spec(module) is not None:
            systems.append(system)
        else:
            print(f"skipping {system}: pip install {'pyzmq' if module == 'zmq' else module}")
    paced_count = int(args.rate * args.seconds)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        plans = {"flood": (args.count, None), "paced": (paced_count, args.rate)}
        for mode in args.modes.split(","):
            count, rate = plans[mode]
            runs: dict[str, list[dict[str, object]]] = {s: [] for s in systems}
            for _ in range(args.repeat):
                for system in systems:  # interleaved: each sees the same machine state
                    skip = int(args.rate * args.warmup) if rate is not None else 0
                    runs[system].append(run_cell(system, size, count, rate, skip))
            for system, cells in runs.items():
                row = {
                    "size": size,
                    "mode": mode,
                    "system": system,
                    "sent_per_s": _median(cells, "sent_per_s"),
                    "delivered": _median(cells, "delivered"),
                    "delivered_min": min(float(c["delivered"]) for c in cells),  # type: ignore[arg-type]
                    "received_per_s": _median(cells, "received_per_s"),
                    "p50_us": _median(cells, "p50_us"),
                    "p90_us": _median(cells, "p90_us"),
                    "p99_us": _median(cells, "p99_us"),
                    "runs": cells,
                }
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                    continue
                latency = (
                    f"  p50 {row['p50_us']:7.1f} µs  p90 {row['p90_us']:7.1f} µs  "
                    f"p99 {row['p99_us']:8.1f} µs"
                    if row["p50_us"] is not None
                    else ""
                )
                print(
                    f"{size:>5} B {mode:<5} {system:<11} sent {row['sent_per_s']:>9,.0f}/s  "
                    f"delivered {row['delivered']:6.1%} (worst {row['delivered_min']:6.1%})  "
                    f"received {row['received_per_s']:>9,.0f}/s{latency}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
