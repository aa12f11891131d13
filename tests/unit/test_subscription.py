"""A subscription's queue: bounded, in order, and no message lost to a getter that gave up."""

from __future__ import annotations

import asyncio

from mcastkit.events import Message
from mcastkit.subscription import QUEUE_LIMIT, Subscription


def _message(n: int) -> Message:
    return Message(1, "tx", "t", n.to_bytes(4, "big"), ("10.0.0.1", 5000), 0, n)


def test_messages_come_out_in_order_and_a_full_queue_counts_what_it_refuses() -> None:
    async def scenario() -> None:
        subscription = Subscription(set(), "*")
        for n in range(QUEUE_LIMIT + 5):
            subscription._offer(_message(n))
        assert subscription.dropped == 5
        assert subscription._offer(None)  # the end is never refused, even when full
        got = [await subscription.get(0) for _ in range(QUEUE_LIMIT)]
        assert [m.seq for m in got if m] == list(range(QUEUE_LIMIT))
        assert await subscription.get(0) is None  # the end

    asyncio.run(scenario())


def test_a_getter_times_out_empty_handed() -> None:
    async def scenario() -> None:
        subscription = Subscription(set(), "*")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await subscription.get(0.05) is None
        assert loop.time() - started >= 0.04
        assert not subscription._waiters

    asyncio.run(scenario())


def test_a_message_meant_for_a_cancelled_getter_goes_to_the_next() -> None:
    async def scenario() -> None:
        subscription = Subscription(set(), "*")
        first = asyncio.ensure_future(subscription.get(5))
        second = asyncio.ensure_future(subscription.get(5))
        await asyncio.sleep(0)  # both wait
        subscription._offer(_message(1))  # wakes the first...
        first.cancel()  # ...which is cancelled before it runs
        message = await asyncio.wait_for(second, 1)
        assert message is not None and message.seq == 1
        assert first.cancelled()

    asyncio.run(scenario())


def test_iteration_ends_when_the_node_stops() -> None:
    async def scenario() -> list[int]:
        subscription = Subscription(set(), "*")
        for n in range(3):
            subscription._offer(_message(n))
        subscription._offer(None)
        return [m.seq async for m in subscription]

    assert asyncio.run(scenario()) == [0, 1, 2]
