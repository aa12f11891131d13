"""One end of a reliable stream for the fault tests, run on a namespace host.

``publish N RATE [SIZE [auto]]``: N one-fragment reliable messages of SIZE bytes (default
32) at RATE messages/s (``auto``: on the stream's adaptive rate; else a fixed 1.5 x RATE),
then linger and say goodbye. ``subscribe SECONDS``: record every delivered stream seq and
every loss report until the publisher left (or failed) and a second passed, or SECONDS;
print them as JSON, with the seconds from the first delivery to the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

from mcastkit import Failed, Left, Node, ReliableConfig, Unrecoverable
from mcastkit.events import UNKNOWN_END

GROUP = "239.255.71.71:7171"


async def publish(count: int, rate: float, size: int, auto: bool = False) -> None:
    config = ReliableConfig() if auto else ReliableConfig(adaptive_rate=False, rate_pps=rate * 1.5)
    async with Node(GROUP, name="publisher", heartbeat=0.3, reliable=config) as node:
        await asyncio.sleep(1.0)
        print("publishing", flush=True)
        started = time.monotonic()
        for index in range(count):
            await node.publish("t", index.to_bytes(4, "big") * (size // 4), reliable=True)
            due = started + (index + 1) / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
        await node.flush(timeout=30)
        print("published", flush=True)
        await asyncio.sleep(3.0)  # serve repairs
        repairs = node.reliable_stats().get("sender", {}).get("repairs-sent", 0)
    print(json.dumps({"published": count, "repairs_sent": repairs}), flush=True)


async def subscribe(seconds: float) -> None:
    delivered: list[int] = []
    losses: list[tuple[int, int | None, str]] = []
    gone = asyncio.Event()
    failed_at: list[float] = []
    heard = [0]
    span: list[float] = []
    async with Node(GROUP, name="subscriber", heartbeat=0.3) as node:
        inbox = node.subscribe("t")
        print("subscribed", flush=True)

        async def events() -> None:
            async for event in node.events():
                if isinstance(event, Unrecoverable):
                    last = None if event.last_seq == UNKNOWN_END else event.last_seq
                    losses.append((event.first_seq, last, event.reason))
                elif isinstance(event, Left) and event.peer.name == "publisher":
                    gone.set()
                elif isinstance(event, Failed) and event.peer.name == "publisher":
                    failed_at.append(time.monotonic())  # gone, or cut off for a while

        async def messages() -> None:
            async for message in inbox:
                delivered.append(message.seq)
                span.append(time.monotonic())
                del span[1:-1]  # the first delivery and the last

        node.run_task(events())
        node.run_task(messages())
        # Until it left, or failed and stayed silent for 6 s (we slept through its goodbye;
        # a link outage it comes back from delivers again), or SECONDS.
        deadline = time.monotonic() + seconds
        while not gone.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gone.wait(), 0.5)
            quiet = failed_at and len(delivered) == heard[0]
            if quiet and time.monotonic() - failed_at[-1] > 6.0:
                break
            heard[0] = len(delivered)
            if not quiet:
                failed_at.clear()
        await asyncio.sleep(1.0)
    seconds = span[-1] - span[0] if span else 0.0  # first delivery to last
    print(json.dumps({"delivered": delivered, "losses": losses, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        size = int(sys.argv[4]) if len(sys.argv) > 4 else 32
        auto = sys.argv[5:] == ["auto"]  # the adaptive rate, RATE only paces the publishing
        asyncio.run(publish(int(sys.argv[2]), float(sys.argv[3]), size, auto))
    else:
        asyncio.run(subscribe(float(sys.argv[2])))
