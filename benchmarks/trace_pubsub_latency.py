"""Where a paced message's one-way latency goes: publisher, kernel, subscriber.

A Node publishes ``--rate`` messages/s for ``--seconds`` on loopback (in a private network
namespace, as bench_pubsub.py); each payload carries its CLOCK_MONOTONIC send stamp. Three
moments are recorded per message, by wrapping (not changing) the runtime's methods:

- the publisher's ``BatchSender.send_queue`` returned: the datagram is in the receiver's
  socket (loopback delivers within the send);
- the subscriber's ``Node._on_readable`` began: the event loop woke for it;
- the application has it: ``get`` returned (``node``), the handler ran (``node-handler``),
  or a blocking ``recv`` returned (``raw``: a plain socket, no Node; its "wakeup" is the
  return itself).

    python benchmarks/trace_pubsub_latency.py [--subscribers node,node-handler,raw]
        [--rate 10000] [--seconds 2] [--json]

Percentiles per segment (µs), the first 0.25 s not counted. The wrappers cost about a
microsecond each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from bench_pubsub import (
    GROUP,
    PORT,
    SETTLE,
    SPEC,
    STAMP,
    _paced,
    enter_private_namespace,
    joined_socket,
    percentiles,
)

SIZE = 64


def _subscriber(kind: str, ready: str, warmup: int) -> list[tuple[int, int, int, int]]:
    """(seq, stamp, wakeup, in the application) for each message, in ns."""
    rows: list[tuple[int, int, int, int]] = []
    if kind == "raw":
        sock = joined_socket((GROUP, PORT))
        open(ready, "w").close()
        sock.settimeout(30)
        try:
            while True:
                data = sock.recv(65536)
                now = time.monotonic_ns()
                sock.settimeout(1.0)
                if len(data) >= SIZE:  # a Node's frame: the payload is its last SIZE bytes
                    sent, seq = STAMP.unpack_from(data, len(data) - SIZE)
                    if warmup <= seq < 1 << 30:
                        rows.append((seq, sent, now, now))
        except TimeoutError:
            return rows

    import mcastkit.aio as aio
    from mcastkit import Message, Node

    woke = [0]
    on_readable = aio.Node._on_readable

    def timed(self: Any, *args: Any) -> None:
        woke[0] = time.monotonic_ns()
        on_readable(self, *args)

    aio.Node._on_readable = timed  # type: ignore[method-assign]

    def take(message: Message) -> None:
        now = time.monotonic_ns()
        sent, seq = STAMP.unpack_from(message.payload)
        if seq >= warmup:
            rows.append((seq, sent, woke[0], now))

    async def run() -> None:
        async with Node(SPEC, iface="lo", name="sub", heartbeat=5) as node:
            if kind == "node-handler":
                node.subscribe("bench", take)
                open(ready, "w").close()
                while not rows or time.monotonic_ns() - rows[-1][3] < 1e9:
                    await asyncio.sleep(0.05)
                return
            inbox = node.subscribe("bench")
            open(ready, "w").close()
            while (message := await inbox.get(1.0 if rows else 30)) is not None:
                take(message)

    asyncio.run(run())
    return rows


def _publish(rate: float, count: int) -> dict[int, int]:
    """A Node paced as bench_pubsub.py paces it; seq -> when its send returned (ns)."""
    import mcastkit.transport.batch as batch
    from mcastkit import Node

    sent_at: dict[int, int] = {}
    current = [-1]
    send_queue = batch.BatchSender.send_queue

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = send_queue(self, *args, **kwargs)
        sent_at.setdefault(current[0], time.monotonic_ns())
        return result

    batch.BatchSender.send_queue = timed  # type: ignore[method-assign]

    async def run() -> None:
        async with Node(SPEC, iface="lo", name="pub", heartbeat=5) as node:
            await asyncio.sleep(SETTLE)
            for payload, idle in _paced(SIZE, count, rate):
                current[0] = STAMP.unpack_from(payload)[1]
                await node.publish("bench", payload)
                if idle:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.1)

    asyncio.run(run())
    return sent_at


def trace(kind: str, rate: float, seconds: float) -> dict[str, Any]:
    ready = f"/tmp/mcastkit-trace-latency-{os.getpid()}-ready"
    if os.path.exists(ready):
        os.unlink(ready)
    warmup = int(rate * 0.25)
    child = subprocess.Popen(
        [sys.executable, __file__, "--role", kind, "--ready", ready, "--warmup", str(warmup)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    sent_at = _publish(rate, int(rate * seconds))
    rows = json.loads(child.communicate(timeout=60)[0])
    os.unlink(ready)
    rows = [r for r in rows if r[0] in sent_at]
    segments = {
        "publisher (stamp to sent)": [sent_at[s] - t for s, t, _, _ in rows],
        "kernel (sent to wakeup)": [w - sent_at[s] for s, _, w, _ in rows],
        "subscriber (wakeup to application)": [a - w for _, _, w, a in rows],
        "total": [a - t for _, t, _, a in rows],
    }
    return {
        "subscriber": kind,
        "messages": len(rows),
        **{name: percentiles(values) for name, values in segments.items() if values},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", default="node,node-handler,raw")
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("mcastkit").setLevel(logging.ERROR)  # an open group here is on purpose
    if args.role != "main":
        print(json.dumps(_subscriber(args.role, args.ready, args.warmup)))
        return 0
    for kind in args.subscribers.split(","):
        if kind not in ("node", "node-handler", "raw"):
            print(f"unknown subscriber {kind!r}: node, node-handler or raw", file=sys.stderr)
            return 2
    if not enter_private_namespace():
        return 2
    for kind in args.subscribers.split(","):
        result = trace(kind, args.rate, args.seconds)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(f"{kind}: {result['messages']} messages (µs)")
        for name, p in result.items():
            if isinstance(p, dict):
                print(
                    f"  {name:36} p50 {p['p50_us']:7.1f}  p90 {p['p90_us']:7.1f}  "
                    f"p99 {p['p99_us']:7.1f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
