"""The seed's demo: random ids, join, announce once, recognise one's own messages, answer others.

``DemoPeer`` is the protocol (bytes in, events and replies out; no socket, clock or randomness
inside). ``run_demo`` drives one or more peers over real group sockets with a select loop.
"""

from __future__ import annotations

import json
import secrets
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .addr import GroupSpec
from .transport import GroupSocket, open_receiver

__all__ = ["DemoEvent", "DemoPeer", "DemoResult", "run_demo"]

APP = "mcastkit-demo"
MAX_DATAGRAM = 1024


@dataclass(frozen=True)
class DemoEvent:
    """Something a demo peer saw: ``greeted`` (a hello from another), ``answered`` (a reply to
    us), ``own`` (our own message looped back), ``invalid`` (not a demo message)."""

    node: str
    node_name: str
    kind: str
    peer: str | None = None
    peer_name: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class DemoPeer:
    """One demo node's protocol state."""

    node_id: str
    name: str
    greeted_by: dict[str, str] = field(default_factory=dict)
    answered_by: dict[str, str] = field(default_factory=dict)
    own_seen: int = 0
    invalid: int = 0

    def announcement(self) -> bytes:
        """The message sent once on start."""
        return self._encode({"type": "hello"})

    def receive(self, data: bytes, source: str) -> tuple[DemoEvent, bytes | None]:
        """Handle one datagram; return what happened and the reply to send, if any."""
        message = self._decode_untrusted(data)
        if message is None:
            self.invalid += 1
            return DemoEvent(self.node_id, self.name, "invalid", source=source), None
        sender, sender_name = message["id"], message["name"]
        if sender == self.node_id:
            self.own_seen += 1
            return DemoEvent(self.node_id, self.name, "own", sender, sender_name, source), None
        if message["type"] == "hello":
            self.greeted_by[sender] = sender_name
            reply = self._encode({"type": "reply", "to": sender})
            return DemoEvent(self.node_id, self.name, "greeted", sender, sender_name, source), reply
        if message.get("to") == self.node_id:
            self.answered_by[sender] = sender_name
            event = DemoEvent(self.node_id, self.name, "answered", sender, sender_name, source)
            if sender in self.greeted_by:
                return event, None
            # The sender started before us and its hello never reached us: its reply is its
            # greeting, and our answer completes the handshake (once: now it is known).
            self.greeted_by[sender] = sender_name
            return event, self._encode({"type": "reply", "to": sender})
        return DemoEvent(self.node_id, self.name, "overheard", sender, sender_name, source), None

    def _encode(self, fields: dict[str, str]) -> bytes:
        body = {"app": APP, "v": 1, "id": self.node_id, "name": self.name, **fields}
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def _decode_untrusted(data: bytes) -> dict[str, str] | None:
        if len(data) > MAX_DATAGRAM:
            return None
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(message, dict) or message.get("app") != APP or message.get("v") != 1:
            return None
        if message.get("type") not in ("hello", "reply"):
            return None
        if not isinstance(message.get("id"), str) or not isinstance(message.get("name"), str):
            return None
        if message["type"] == "reply" and not isinstance(message.get("to"), str):
            return None
        return {k: v for k, v in message.items() if isinstance(v, str)}


@dataclass
class DemoResult:
    """Who greeted and answered whom, per node."""

    peers: list[DemoPeer]
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
        return all(len(p.greeted_by) >= count and len(p.answered_by) >= count for p in self.peers)

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
                    "own_messages_ignored": p.own_seen,
                    "invalid": p.invalid,
                }
                for p in self.peers
            ],
        }


def new_node_id() -> str:
    """A random 64-bit id in hex (the seed's 'random id as identity')."""
    return secrets.token_hex(8)


def run_demo(
    group: GroupSpec,
    *,
    nodes: int = 1,
    iface: str | int | None = None,
    ttl: int = 1,
    duration: float | None = 3.0,
    names: list[str] | None = None,
    on_event: Callable[[DemoEvent], None] | None = None,
    expect_peers: int | None = None,
) -> DemoResult:
    """Run ``nodes`` demo peers in this process, each with its own socket on ``group``.

    Stops when every local node has been greeted and answered by ``expect_peers`` others
    (default: the other local nodes; never for a lone node), or after ``duration`` seconds
    (None: until interrupted).
    """
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    wanted = expect_peers if expect_peers is not None else (nodes - 1 if nodes > 1 else None)
    sockets: list[GroupSocket] = []
    peers: list[DemoPeer] = []
    start = time.monotonic()
    try:
        for number in range(nodes):
            sockets.append(open_receiver(group, iface=iface, ttl=ttl, loopback=True))
            name = names[number] if names and number < len(names) else f"node-{number + 1}"
            peers.append(DemoPeer(new_node_id(), name))
        # Every socket joined before anyone speaks, so local nodes cannot miss a hello.
        for sock, peer in zip(sockets, peers, strict=True):
            sock.send(peer.announcement())
        by_fd = {s.fileno(): (s, p) for s, p in zip(sockets, peers, strict=True)}
        while True:
            elapsed = time.monotonic() - start
            if duration is not None and elapsed >= duration:
                break
            if wanted is not None and all(
                len(p.greeted_by) >= wanted and len(p.answered_by) >= wanted for p in peers
            ):
                break  # same test as DemoResult.heard_at_least, on live state
            wait = 0.2 if duration is None else min(0.2, duration - elapsed)
            ready, _, _ = select.select(list(by_fd), [], [], max(0.0, wait))
            for fd in ready:
                sock, peer = by_fd[fd]
                packet = sock.recv(timeout=0)
                if packet is None:
                    continue
                event, reply = peer.receive(packet.data, f"{packet.source}:{packet.source_port}")
                if reply is not None:
                    sock.send(reply)
                if on_event is not None:
                    on_event(event)
    finally:
        for sock in sockets:
            sock.close()
    interface = sockets[0].interface.name if sockets else ""
    return DemoResult(peers, str(group), interface, time.monotonic() - start)
