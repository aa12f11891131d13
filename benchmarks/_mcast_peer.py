"""The mcast side of bench_reliable.py: a Node reliable-stream sender or receiver.

    python _mcast_peer.py send GROUP PORT IFACE COUNT SIZE SEED [RECEIVERS]
    python _mcast_peer.py recv GROUP PORT IFACE COUNT

Same payloads, same output as _norm_peer.py, so the harness treats both alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sys
import time

from mcastkit import Node, Unrecoverable

logging.getLogger("mcastkit").setLevel(logging.ERROR)  # the open-group warning


async def send(group: str, iface: str, count: int, size: int, seed: int, receivers: int) -> None:
    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for _ in range(count)]
    async with Node(group, iface=iface, name="sender", failure_timeout=30) as node:
        # Start once every receiver is known: each then knows where the stream starts (our
        # hello or our answer to its heartbeat told it), so none starts as a late joiner.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(node.peers) < receivers and loop.time() < deadline:
            await asyncio.sleep(0.02)
        print(json.dumps({"started": time.time()}), flush=True)
        for payload in payloads:
            await node.publish("bench", payload, reliable=True)
        await node.flush()
        await asyncio.sleep(3600)  # keep serving repairs until the harness stops us


async def recv(group: str, iface: str, count: int) -> None:
    async with Node(group, iface=iface, name="receiver", failure_timeout=30) as node:
        inbox = node.subscribe("bench")
        lost: list[str] = []

        async def watch() -> None:
            async for event in node.events(Unrecoverable):
                if isinstance(event, Unrecoverable):
                    lost.append(event.reason)

        node.run_task(watch())
        print("ready", file=sys.stderr, flush=True)
        digests: list[str] = []
        while len(digests) < count:
            message = await inbox.get(timeout=600)
            if message is None:
                break
            digests.append(hashlib.sha256(message.payload).hexdigest())
        done = time.time()
        print(json.dumps({"done": done, "digests": digests, "aborted": len(lost)}), flush=True)


if __name__ == "__main__":
    role, group, port, iface, count = sys.argv[1:6]
    spec = f"{group}:{port}"
    if role == "send":
        receivers = int(sys.argv[8]) if len(sys.argv) > 8 else 1
        asyncio.run(send(spec, iface, int(count), int(sys.argv[6]), int(sys.argv[7]), receivers))
    else:
        asyncio.run(recv(spec, iface, int(count)))
