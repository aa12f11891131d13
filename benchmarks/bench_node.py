"""Messages per second through a Node vs raw ``socket.sendto``, in the same run and setup.

Sender and receiver are separate processes (one core each) on loopback, inside a private
network namespace when run as root (the script re-executes itself under ``unshare --net``), so
nothing leaves the machine. Each cell sends a fixed number of messages as fast as the sender
can; the receiver counts what arrived. Figures are ratios to the raw socket in the same run.

    python benchmarks/bench_node.py [--count 100000] [--repeat 3] [--json]

With --repeat N every cell runs N times, interleaved with the raw cells, and the median run
(by send rate) is reported: loopback rates on a 2-core machine vary by 10-20 % between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from _isolation import isolate

GROUP, PORT = "239.255.91.1", 5910
SPEC = f"{GROUP}:{PORT}"
KEY = bytes(range(32))
IDLE_END = 1.0  # the receiver stops after this long without traffic


async def _recv_node(mode: str, ready_file: str) -> dict[str, float]:
    from mcastkit import GroupKey, Node

    key = GroupKey(KEY) if mode == "encrypted" else None
    async with Node(SPEC, iface="lo", name="receiver", key=key, heartbeat=5) as node:
        inbox = node.subscribe("bench")
        open(ready_file, "w").close()
        count, first, last = 0, 0.0, 0.0
        while True:
            message = await inbox.get(IDLE_END if count else 30)
            if message is None:
                break
            last = time.perf_counter()
            first = first or last
            count += 1
        return {"received": count, "seconds": last - first}


def _recv_raw(ready_file: str) -> dict[str, float]:
    from mcastkit import open_receiver

    with open_receiver(SPEC, iface="lo", rcvbuf=4 << 20) as rx:  # same as Node's default
        open(ready_file, "w").close()
        rx.sock.settimeout(30)
        count, first, last = 0, 0.0, 0.0
        while True:
            try:
                rx.sock.recv(65535)
            except TimeoutError:
                break
            last = time.perf_counter()
            first = first or last
            count += 1
            rx.sock.settimeout(IDLE_END)
        return {"received": count, "seconds": last - first}


async def _send_node(mode: str, size: int, count: int) -> float:
    from mcastkit import GroupKey, Node

    key = GroupKey(KEY) if mode == "encrypted" else None
    payload = b"x" * size
    async with Node(SPEC, iface="lo", name="sender", key=key, heartbeat=5) as node:
        start = time.perf_counter()
        for _ in range(count):
            await node.publish("bench", payload)
        return time.perf_counter() - start


def _send_raw(size: int, count: int) -> float:
    from mcastkit import open_sender

    payload = b"x" * size
    with open_sender(SPEC, iface="lo") as tx:
        sendto, destination = tx.sock.sendto, tx.destination
        start = time.perf_counter()
        for _ in range(count):
            sendto(payload, destination)
        return time.perf_counter() - start


def run_cell(mode: str, size: int, count: int) -> dict[str, float]:
    ready = f"/tmp/mcastkit-bench-{os.getpid()}-ready"
    if os.path.exists(ready):
        os.unlink(ready)
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--role", "recv", "--mode", mode, "--ready", ready],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the receiving node's hello exchange settles
    if mode == "raw":
        elapsed = _send_raw(size, count)
    else:
        elapsed = asyncio.run(_send_node(mode, size, count))
    out, _ = receiver.communicate(timeout=60)
    received = json.loads(out)
    os.unlink(ready)
    return {
        "mode": mode,
        "size": size,
        "sent": count,
        "send_rate": count / elapsed,
        "received": received["received"],
        "recv_rate": received["received"] / received["seconds"] if received["seconds"] else 0.0,
        "delivered": received["received"] / count,
    }


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    ranked = sorted(results, key=lambda cell: cell["send_rate"])
    middle = dict(ranked[len(ranked) // 2])
    middle["runs"] = len(results)
    middle["send_rates"] = [round(cell["send_rate"]) for cell in results]  # type: ignore[assignment]
    middle["delivered_min"] = min(cell["delivered"] for cell in results)
    return middle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages per cell")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; median reported")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "recv":
        if args.mode == "raw":
            result = _recv_raw(args.ready)
        else:
            result = asyncio.run(_recv_node(args.mode, args.ready))
        print(json.dumps(result))
        return 0
    isolate()
    rows = []
    for size in (64, 1024):
        runs: dict[str, list[dict[str, float]]] = {"raw": [], "framed": [], "encrypted": []}
        for _ in range(args.repeat):
            for mode, results in runs.items():
                results.append(run_cell(mode, size, args.count))
        cells = {mode: _median(results) for mode, results in runs.items()}
        raw = cells["raw"]
        for mode, cell in cells.items():
            cell["send_ratio"] = cell["send_rate"] / raw["send_rate"]
            cell["recv_ratio"] = cell["recv_rate"] / raw["recv_rate"] if raw["recv_rate"] else 0.0
            rows.append(cell)
            if not args.json:
                print(
                    f"{size:>5} B {mode:<10} sent {cell['send_rate']:>9,.0f}/s "
                    f"({cell['send_ratio']:5.0%} of raw)  received {cell['received']:>7} "
                    f"({cell['delivered']:5.1%}, worst run {cell['delivered_min']:5.1%}) at "
                    f"{cell['recv_rate']:>9,.0f}/s ({cell['recv_ratio']:5.0%} of raw)",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
