"""Beyond multicast (issue 23): unicast-only membership, relay throughput and latency, and
unicast fan-out against multicast, each against its reference in the same run.

    python benchmarks/bench_reach.py [--part membership|relay|fanout] [--repeat 3] [--json]

As root it runs in a private network namespace (``unshare --net``) and builds its own test
hosts there (tests/netlab.py): nothing leaves the machine.

- membership: 20 Nodes with multicast off, all seeded with the first one's address, on
  loopback: seconds from the last start until every member knows all 19 others; then a
  member in its own process is killed (SIGKILL) and the seconds until all 19 report it
  failed (heartbeat 1 s, failure timeout 3 s).
- relay: two sites (a bridge each) joined by a router that routes no multicast, a relay on
  each. ``mcast bench send``'s datagrams (1,400 bytes) at 100k pps from site A reach a
  receiver on site B only through the relays: received / sent. Latency at 2k pps: the one-way
  p50 through the relays minus the p50 of the same sender heard on its own site.
- fanout: a Node publishing 1,000-byte messages as fast as it can, once to the group with
  five receivers joined, once as unicast copies to five receivers (its copy targets set
  directly: the sending path is what is measured): messages a second each receiver got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _isolation import isolate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

GROUP = "239.255.93.1:5930"
PYTHON = sys.executable


# --- membership --------------------------------------------------------------------------

MEMBER = """
import asyncio, sys
from mcastkit import Node
async def main():
    async with Node(sys.argv[1], iface="lo", name="doomed", multicast=False,
                    peers=[sys.argv[2]]):
        print("up", flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def _membership(count: int = 20) -> dict[str, float]:
    from mcastkit import Failed, Node

    nodes = [Node(GROUP, iface="lo", name="m0", multicast=False, peers=["127.0.0.1:5930"])]
    await nodes[0].start()
    seed = "{}:{}".format(*nodes[0].unicast_address)  # type: ignore[str-format]
    for index in range(1, count):
        node = Node(GROUP, iface="lo", name=f"m{index}", multicast=False, peers=[seed])
        await node.start()
        nodes.append(node)
    started = time.monotonic()
    while any(len(node.peers) < count - 1 for node in nodes):
        await asyncio.sleep(0.005)
        if time.monotonic() - started > 20:
            raise RuntimeError("no convergence in 20 s")
    converged = time.monotonic() - started
    doomed = subprocess.Popen([PYTHON, "-c", MEMBER, GROUP, seed], stdout=subprocess.PIPE)
    assert doomed.stdout is not None
    doomed.stdout.readline()
    while any(not any(p.name == "doomed" for p in n.peers.values()) for n in nodes):
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.5)  # a heartbeat or so: a kill between heartbeats, as in life
    failed: dict[str, float] = {}
    watchers = []

    async def watch(node: Node) -> None:
        async for event in node.events(Failed):
            assert isinstance(event, Failed)
            if event.peer.name == "doomed":
                failed[node.name] = time.monotonic()
                return

    for node in nodes:
        watchers.append(asyncio.ensure_future(watch(node)))
    await asyncio.sleep(0.05)
    doomed.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    doomed.wait()
    await asyncio.wait_for(asyncio.gather(*watchers), 15)
    for node in nodes:
        await node.stop()
    return {
        "members": count,
        "converge_s": round(converged, 3),
        "failure_seen_s": round(max(failed.values()) - killed, 3),
        "failure_seen_first_s": round(min(failed.values()) - killed, 3),
    }


# --- relay --------------------------------------------------------------------------------

RECEIVER = """
import json, struct, sys, time, socket
from mcastkit import open_receiver
head = struct.Struct("!4sQQ")
seconds, samples = float(sys.argv[2]), []
count = 0
with open_receiver(sys.argv[1], iface="eth0", rcvbuf=16 << 20) as rx:
    print("ready", flush=True)
    rx.sock.settimeout(10)
    end = None
    while True:
        try:
            data = rx.sock.recv(65535)
        except TimeoutError:
            break
        now = time.monotonic_ns()
        if end is None:
            end = time.monotonic() + seconds
            rx.sock.settimeout(1.0)
        count += 1
        if len(data) >= head.size and data[:4] == b"MKB1" and len(samples) < 200000:
            samples.append(now - head.unpack_from(data)[2])
        if time.monotonic() > end:
            break
samples.sort()
p50 = samples[len(samples) // 2] / 1e6 if samples else None
print(json.dumps({"received": count, "p50_ms": p50}))
"""


def _bench_send(host: object, rate: str, seconds: float) -> dict[str, object]:
    done = host.mcast(  # type: ignore[attr-defined]
        "bench", "send", GROUP, "--rate", rate, "--size", "1400", "--duration", str(seconds),
        "--gso", "--iface", "eth0", "--json", timeout=seconds + 30,
    )  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def _receive(host: object, seconds: float) -> subprocess.Popen[str]:
    proc = host.start(PYTHON, "-c", RECEIVER, GROUP, str(seconds))  # type: ignore[attr-defined]
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready")
    return proc


def _relay_cell(rate: str, seconds: float, with_direct: bool) -> dict[str, object]:
    from netlab import Lab, wait_for_line

    lab = Lab()
    try:
        (a,), (b,) = lab.sites(2)
        relays = []
        for host, other in ((a, b), (b, a)):
            proc = host.start_mcast("relay", GROUP, "--peer", other.ipv4, "--iface", "eth0",
                                    "--duration", str(seconds + 20))  # fmt: skip
            wait_for_line(proc.stderr, "relaying")
            relays.append(proc)
        time.sleep(2.5)
        # At full rate only the far receiver runs: two cores are shared by five programs.
        receivers = [_receive(b, seconds)] + ([_receive(a, seconds)] if with_direct else [])
        sent = _bench_send(a, rate, seconds)
        results = [json.loads(p.communicate(timeout=60)[0]) for p in receivers]
        for proc in relays:
            proc.terminate()
            proc.communicate(timeout=20)
    finally:
        lab.close()
    summary = sent.get("summary", sent)
    packets = int(summary["packets"])  # type: ignore[call-overload]
    return {
        "rate": rate,
        "sent": packets,
        "send_pps": round(packets / float(summary["seconds"])),  # type: ignore[arg-type]
        "relayed": results[0]["received"],
        "relayed_ratio": round(results[0]["received"] / packets, 4),
        "relayed_p50_ms": results[0]["p50_ms"],
        "direct_p50_ms": results[1]["p50_ms"] if with_direct else None,
    }


# --- fan-out ------------------------------------------------------------------------------

SINKS = """
import json, sys, select, time
from mcastkit import open_receiver
from mcastkit.transport.batch import BatchReceiver
mode, count = sys.argv[1], int(sys.argv[2])
socks = []
if mode.endswith("multicast"):
    socks = [open_receiver(sys.argv[3], iface="lo", rcvbuf=32 << 20).sock for _ in range(5)]
else:
    import socket
    for _ in range(5):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
readers = [BatchReceiver(s, watch_load=False) for s in socks]
print(json.dumps([s.getsockname()[1] for s in socks]), flush=True)
counts, first, last = [0] * 5, None, time.monotonic()
def take(i):
    def handle(buffer, spans, source, _):
        counts[i] += len(spans)
    return handle
handlers = [take(i) for i in range(5)]
while True:
    ready, _, _ = select.select(socks, [], [], 1.0 if first else 30)
    if not ready:
        break
    for s in ready:
        i = socks.index(s)
        readers[i].receive_runs(handlers[i], 256)
    first = first or time.monotonic()
    last = time.monotonic()
print(json.dumps({"counts": counts, "seconds": last - first}))
"""


async def _publish(mode: str, ports: list[int], count: int) -> tuple[float, float]:
    from mcastkit import Node

    multicast = mode == "multicast"
    node = Node(GROUP, iface="lo", name="fan", multicast=multicast, heartbeat=30,
                peers=[] if multicast else ["127.0.0.1:9"])  # fmt: skip
    async with node:
        session = node.session
        assert session is not None
        if not multicast:
            session.reach.targets = [("127.0.0.1", port) for port in ports]
        payload = b"x" * 1000
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            await node.publish("fan", payload)
        await asyncio.sleep(0)
        return time.perf_counter() - start, time.process_time() - cpu


def _publish_raw(mode: str, ports: list[int], count: int) -> tuple[float, float]:
    """The kernel's own cost: the same datagrams from a plain socket, in GSO runs of 64."""
    import socket

    from mcastkit.transport.batch import BatchSender

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sender = BatchSender(sock)
    host, port = GROUP.split(":")
    targets = [(host, int(port))] if mode == "raw-multicast" else [("127.0.0.1", p) for p in ports]
    run = [b"x" * 1032] * 64  # a framed 1,000-byte message is 1,032 bytes
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count // 64):
        for target in targets:
            sender.send(run, target)
    sock.close()
    return time.perf_counter() - start, time.process_time() - cpu


def _fanout_cell(mode: str, count: int) -> dict[str, object]:
    sinks = subprocess.Popen([PYTHON, "-c", SINKS, mode, str(count), GROUP],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sinks.stdout is not None
    ports = json.loads(sinks.stdout.readline())
    if mode.startswith("raw"):
        elapsed, cpu = _publish_raw(mode, ports, count)
        count = count // 64 * 64
    else:
        elapsed, cpu = asyncio.run(_publish(mode, ports, count))
    result = json.loads(sinks.communicate(timeout=60)[0])
    per_peer = statistics.median(result["counts"])
    return {
        "mode": mode,
        "published": count,
        "publish_rate": round(count / elapsed),
        # The sender's own CPU (user and system, the loopback delivery it does included) per
        # message: steadier than rates on two shared cores.
        "cpu_us_per_message": round(cpu / count * 1e6, 3),
        "per_peer_received": per_peer,
        "per_peer_rate": round(per_peer / max(result["seconds"], elapsed)),
        "delivered_min": round(min(result["counts"]) / count, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("membership", "relay", "fanout"), action="append")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; median reported")
    parser.add_argument("--seconds", type=float, default=3.0, help="relay cells' duration")
    parser.add_argument("--count", type=int, default=100_000, help="fan-out messages")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    isolate()
    logging.getLogger("mcastkit").setLevel(logging.ERROR)  # "group is open", per node
    if os.geteuid() != 0:
        print("run as root: the benchmark builds its own namespaces", file=sys.stderr)
        return 2
    parts = args.part or ["membership", "relay", "fanout"]
    rows: dict[str, object] = {}
    if "membership" in parts:
        runs = [asyncio.run(_membership()) for _ in range(args.repeat)]
        runs.sort(key=lambda r: r["converge_s"])
        rows["membership"] = {"runs": runs, "median": runs[len(runs) // 2]}
        if not args.json:
            for run in runs:
                print(f"membership 20 unicast-only: converge {run['converge_s']:.3f} s, "
                      f"failure seen by all {run['failure_seen_s']:.3f} s after the kill",
                      flush=True)  # fmt: skip
    if "relay" in parts:
        cells = []
        for _ in range(args.repeat):
            cells.append(_relay_cell("100kpps", args.seconds, with_direct=False))
            cells.append(_relay_cell("2kpps", args.seconds, with_direct=True))
        rows["relay"] = cells
        if not args.json:
            for cell in cells:
                line = (f"relay {cell['rate']:>7}: sent {cell['sent']} at {cell['send_pps']}/s, "
                        f"through the relays {cell['relayed']} ({cell['relayed_ratio']:.1%}), "
                        f"p50 {cell['relayed_p50_ms']:.3f} ms")  # fmt: skip
                if cell["direct_p50_ms"] is not None:
                    added = cell["relayed_p50_ms"] - cell["direct_p50_ms"]  # type: ignore[operator]
                    line += f" vs {cell['direct_p50_ms']:.3f} ms direct (added {added:.3f} ms)"
                print(line, flush=True)
    if "fanout" in parts:
        cells = []
        for _ in range(args.repeat):
            for mode in ("multicast", "unicast", "raw-multicast", "raw-unicast"):
                cells.append(_fanout_cell(mode, args.count))
        rows["fanout"] = cells
        if not args.json:
            for cell in cells:
                print(f"fan-out {cell['mode']:<13}: published {cell['publish_rate']}/s, each of "
                      f"5 peers got {cell['per_peer_rate']}/s (worst delivered "
                      f"{cell['delivered_min']:.1%}); sender CPU {cell['cpu_us_per_message']} "
                      "us a message", flush=True)  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
