"""The seed's demo on group Nodes: random ids, join, announce, answer every other node.

``DemoPeer`` is the demo's logic (messages in, events and replies out; no I/O). Each node is a
real :class:`~mcastkit.aio.Node`, which draws the random id, joins, and recognises its own
messages by id (the seed's rule) so they never reach the demo. ``run_demo`` runs one or more
nodes in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .addr import GroupSpec, format_endpoint
from .aio import Node
from .events import Message
from .peers import PeerInfo
from .security import GroupKey
from .subscription import until_members
from .transport import IfaceChoice

__all__ = ["DemoEvent", "DemoPeer", "DemoResult", "run_demo"]

TOPIC = "mcastkit/demo"
HELLO = "hello"
REPLY_PREFIX = "reply "
REANNOUNCE_MAX = 8.0  # seconds between hellos repeated while expected nodes are missing
PARTING = 0.2  # seconds between the parting answers and the goodbye
ALONE_AFTER = 5.0  # seconds without another node before a node says it is alone


@dataclass(frozen=True)
class DemoEvent:
    """What a demo node saw: ``greeted`` (another's hello), ``answered`` (a reply to us),
    ``repeated`` (either of those again), ``overheard`` (a reply to someone else),
    ``invalid`` (not a demo message), ``alone`` (no other node heard in ``ALONE_AFTER``
    seconds; ``interface`` is where it listens, for a hint)."""

    node: str
    node_name: str
    kind: str
    peer: str | None = None
    peer_name: str | None = None
    source: str | None = None
    interface: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class DemoPeer:
    """One demo node's logic: who greeted it and who answered its hello."""

    node_id: str
    name: str
    greeted_by: dict[str, str] = field(default_factory=dict)
    answered_by: dict[str, str] = field(default_factory=dict)
    invalid: int = 0

    @staticmethod
    def announcement() -> str:
        """The message sent once on start."""
        return HELLO

    def receive(
        self, sender: str, sender_name: str, text: str, source: str
    ) -> tuple[DemoEvent, str | None]:
        """Handle another node's message; return what happened and the reply to send, if any."""
        if text == HELLO:
            # A hello again (our answer was lost, or theirs): answered again, told once.
            kind = "repeated" if sender in self.greeted_by else "greeted"
            self.greeted_by[sender] = sender_name
            return self._event(kind, sender, sender_name, source), REPLY_PREFIX + sender
        if not text.startswith(REPLY_PREFIX):
            self.invalid += 1
            return self._event("invalid", sender, sender_name, source), None
        if text[len(REPLY_PREFIX) :] != self.node_id:
            return self._event("overheard", sender, sender_name, source), None
        kind = "repeated" if sender in self.answered_by else "answered"
        self.answered_by[sender] = sender_name
        event = self._event(kind, sender, sender_name, source)
        if sender in self.greeted_by:
            return event, None
        # The sender started before us and its hello never reached us: its reply is its
        # greeting, and our answer completes the handshake (once: now it is known).
        self.greeted_by[sender] = sender_name
        return event, REPLY_PREFIX + sender

    def _event(self, kind: str, sender: str, sender_name: str, source: str) -> DemoEvent:
        return DemoEvent(self.node_id, self.name, kind, sender, sender_name, source)

    def heard_at_least(self, count: int) -> bool:
        """Greeted and answered by at least ``count`` others."""
        return len(self.greeted_by) >= count and len(self.answered_by) >= count

    def parting_replies(self) -> list[str]:
        """Our answers once more, to everyone who greeted us, as we stop: across a router an
        earlier answer may have been lost while the route was being learnt, and a node that
        has left cannot answer the other's next hello."""
        return [REPLY_PREFIX + sender for sender in self.greeted_by]


@dataclass
class DemoResult:
    """Who greeted and answered whom, per node."""

    peers: list[DemoPeer]
    own_ignored: list[int]
    group: str
    interface: str
    elapsed: float

    @property
    def complete(self) -> bool:
        """Every local node heard every other local node's hello and reply."""
        ids = {p.node_id for p in self.peers}
        return all(
            set(p.greeted_by) >= ids - {p.node_id} and set(p.answered_by) >= ids - {p.node_id}
            for p in self.peers
        )

    def heard_at_least(self, count: int) -> bool:
        """Every local node was greeted and answered by at least ``count`` others."""
        return all(p.heard_at_least(count) for p in self.peers)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "group": self.group,
            "interface": self.interface,
            "elapsed": round(self.elapsed, 3),
            "complete": self.complete,
            "nodes": [
                {
                    "id": p.node_id,
                    "name": p.name,
                    "greeted_by": sorted(p.greeted_by),
                    "answered_by": sorted(p.answered_by),
                    "own_messages_ignored": own,
                    "invalid": p.invalid,
                }
                for p, own in zip(self.peers, self.own_ignored, strict=True)
            ],
        }


async def run_demo_async(
    group: GroupSpec | str,
    *,
    nodes: int = 1,
    iface: IfaceChoice = None,
    ttl: int = 1,
    duration: float | None = 3.0,
    names: list[str] | None = None,
    on_event: Callable[[DemoEvent], None] | None = None,
    expect_peers: int | None = None,
    key: GroupKey | None = None,
    peers: Iterable[str] = (),
    multicast: bool = True,
    unicast_port: int | None = None,
) -> DemoResult:
    """Run ``nodes`` demo nodes on the running event loop (see ``run_demo``). ``peers``,
    ``multicast``, ``unicast_port``: as for ``Node`` (members beyond multicast)."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    wanted = expect_peers if expect_peers is not None else (nodes - 1 if nodes > 1 else None)
    members = [
        Node(
            group,
            iface=iface,
            ttl=ttl,
            key=key,
            name=names[n] if names and n < len(names) else f"node-{n + 1}",
            peers=peers,
            multicast=multicast,
            unicast_port=unicast_port,
        )
        for n in range(nodes)
    ]
    start = time.monotonic()
    started: list[Node] = []
    done = asyncio.Event()
    try:
        for member in members:
            started.append(await member.start())
        demo_peers = [DemoPeer(f"{m.node_id:016x}", m.name) for m in members]
        inboxes = [m.subscribe(TOPIC) for m in members]

        def finished() -> bool:
            return wanted is not None and all(p.heard_at_least(wanted) for p in demo_peers)

        async def serve(member: Node, peer: DemoPeer, inbox: Any) -> None:
            message: Message
            async for message in inbox:
                sender = f"{message.sender:016x}"
                source = format_endpoint(*message.source)
                name = await _name_of(member, message)
                event, reply = peer.receive(sender, name, message.text(), source)
                if reply is not None:
                    await member.publish(TOPIC, reply)
                if on_event is not None:
                    on_event(event)
                if finished():
                    done.set()

        async def alone() -> None:
            await asyncio.sleep(ALONE_AFTER)
            for member, peer in zip(members, demo_peers, strict=True):
                if not peer.greeted_by and not peer.answered_by and on_event is not None:
                    on_event(
                        DemoEvent(peer.node_id, peer.name, "alone", interface=member.interface)
                    )

        tasks = [
            asyncio.ensure_future(serve(m, p, i))
            for m, p, i in zip(members, demo_peers, inboxes, strict=True)
        ]
        tasks.append(asyncio.ensure_future(alone()))
        # Every node joined before anyone speaks, so local nodes cannot miss a hello.
        for member in members:
            await member.publish(TOPIC, DemoPeer.announcement())
        # Interrupted: the result so far is the answer (the nodes still say goodbye).
        with contextlib.suppress(asyncio.CancelledError):
            await _announce_until(done, members, duration, wanted is not None)
            if done.is_set():
                for member, peer in zip(members, demo_peers, strict=True):
                    for reply in peer.parting_replies():
                        await member.publish(TOPIC, reply)
                await asyncio.sleep(PARTING)  # let them leave before the goodbye
        for task in tasks:
            task.cancel()
        own = [m.counters.get("own", 0) for m in members]
        interface = members[0].interface
    finally:
        for member in started:
            await member.stop()
    return DemoResult(demo_peers, own, str(group), interface, time.monotonic() - start)


async def _name_of(member: Node, message: Message, wait: float = 0.5) -> str:
    """The sender's name. A message can overtake its sender's hello (a node that joined
    later hears the group before the answers to its own hello): then wait a little for the
    hello, which the session asked for, instead of showing "?"."""

    def heard(peers: dict[int, PeerInfo]) -> bool:
        peer = peers.get(message.sender)
        return peer is not None and peer.hello_seen

    if await until_members(member, heard, wait):
        return member.peers[message.sender].name
    return message.sender_name


async def _announce_until(
    done: asyncio.Event, members: list[Node], duration: float | None, again: bool
) -> None:
    """Wait until ``done`` or ``duration``. With ``again`` (nodes are expected), say hello
    once more after 1, 2, 4 ... 8 s while they have not all answered: across a router the
    first datagrams can be lost while the router learns the new member or source."""
    deadline = None if duration is None else time.monotonic() + duration
    gap = 1.0
    while not done.is_set():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        wait = left if not again else gap if left is None else min(gap, left)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), wait)
        if again and not done.is_set():
            for member in members:
                await member.publish(TOPIC, DemoPeer.announcement())
            gap = min(gap * 2, REANNOUNCE_MAX)


def run_demo(group: GroupSpec | str, **options: Any) -> DemoResult:
    """Run demo nodes in this process, each its own Node (own socket pair) on ``group``.

    Stops when every local node has been greeted and answered by ``expect_peers`` others
    (default: the other local nodes; never for a lone node), or after ``duration`` seconds
    (None: until interrupted). Options: nodes, iface, ttl, duration, names, on_event,
    expect_peers, key.
    """
    return asyncio.run(run_demo_async(group, **options))
