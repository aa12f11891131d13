"""A real Node under attack, run as its own process (under ``prlimit --as`` by the tests).

It prints ``ready ID INCARNATION`` once started, runs for ``--seconds``, and then
prints one JSON line: peak and start RSS, the longest event-loop stall, counters, peers,
messages and requests seen, losses reported, and its reliable stream's counters. The attacker
is the test process, sending crafted datagrams from raw sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from mcastkit import Node, ReliableConfig, Unrecoverable


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def main(args: argparse.Namespace) -> dict[str, object]:
    reliable = ReliableConfig(adaptive_rate=False, rate_bps=200e6)
    node = Node(
        args.group,
        iface="lo",
        name=args.name,
        passphrase=args.passphrase,
        heartbeat=0.3,
        reliable=reliable,
        max_peers=args.max_peers,
        max_skew=args.max_skew,
    )
    served: list[str] = []
    messages: list[dict[str, object]] = []
    losses: list[dict[str, object]] = []
    joined: set[str] = set()
    async with node:
        node.serve("echo", lambda request: served.append(request.text()) or "ok")
        inbox = node.subscribe("*")
        base_rss = rss_kb("VmRSS")
        session = node.session
        assert session is not None
        print("ready", f"{node.node_id:016x}", session.incarnation, flush=True)
        stall = 0.0

        async def watch_loop() -> None:
            nonlocal stall
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                stall = max(stall, time.monotonic() - before - 0.01)

        async def watch_events() -> None:
            async for event in node.events():
                if isinstance(event, Unrecoverable):
                    losses.append({"first": event.first_seq, "reason": event.reason})
                elif type(event).__name__ == "Joined":
                    joined.add(f"{event.peer.node_id:016x}")  # type: ignore[union-attr]

        async def take_messages() -> None:
            async for message in inbox:
                messages.append({"topic": message.topic, "sender": f"{message.sender:016x}"})

        node.run_task(watch_loop())
        node.run_task(watch_events())
        node.run_task(take_messages())
        if args.publish_kib:
            await node.publish("bulk", b"b" * (args.publish_kib << 10), reliable=True)
        if args.say:
            await node.publish("news", args.say)
        await asyncio.sleep(args.seconds)
        summary = {
            "id": f"{node.node_id:016x}",
            "rss_start_kb": base_rss,
            "rss_peak_kb": rss_kb("VmHWM"),
            "rss_end_kb": rss_kb("VmRSS"),
            "stall_s": round(stall, 4),
            "counters": node.counters,
            "peers": len(node.peers),
            "joined": sorted(joined),
            "messages": messages,
            "served": served,
            "losses": losses,
            "reliable": node.reliable_stats().get("sender", {}),
        }
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", default="239.255.66.66:6666")
    parser.add_argument("--name", default="victim")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--passphrase")
    parser.add_argument("--publish-kib", type=int, default=0)
    parser.add_argument("--say")
    parser.add_argument("--max-peers", type=int, default=4096)
    parser.add_argument("--max-skew", type=float, default=30.0)
    result = asyncio.run(main(parser.parse_args()))
    sys.stdout.write(json.dumps(result) + "\n")
