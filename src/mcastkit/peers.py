"""What a node knows about each other member, and how topics match (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .addr import format_endpoint

if TYPE_CHECKING:  # the crypto library loads only where a group is sealed
    from .security import ReplayWindow

__all__ = ["MAX_PATHS", "Address", "PeerInfo", "random_id", "topic_matches"]

Address = tuple[str, int]  # a host and a port: the one alias of it


def random_id(random_bytes: Callable[[int], bytes]) -> int:
    """A random 64-bit id of a node, a relay or a transfer (0 is reserved: never drawn)."""
    return int.from_bytes(random_bytes(8), "big") or 1


MAX_PATHS = 16  # interfaces remembered per peer: a bound against a flood of forged names


@dataclass
class PeerInfo:
    """What this node knows about one other member."""

    node_id: int
    incarnation: int
    address: Address | None
    first_seen: float
    last_seen: float
    meta: dict[str, Any] = field(default_factory=dict)
    received: int = 0
    lost: int = 0
    highest_seq: int = -1
    rtt: float | None = None
    reported: bool = False  # a Joined event went out for this peer
    stream_start: int = 0  # its reliable stream's next seq, as its last hello said
    hello_seen: bool = False  # it sent a hello: a member (its NACKs are served)
    resume_from: int = 0  # back after a failure: its stream resumes here, not at a hello's
    last_stamp: int = 0  # highest timestamp seen from this incarnation (µs)
    windows: dict[bool, ReplayWindow] = field(default_factory=dict, repr=False)
    # Each interface it was heard on, with its address there (several paths: one member).
    paths: dict[str, Address] = field(default_factory=dict)
    # Reach (reach.py): when its multicast last arrived, whether we judge that (it was met by
    # unicast), whether we ask it for unicast copies, and until when it asked us for ours.
    heard_multicast: float = float("-inf")
    watched: bool = False
    asking: bool = False
    copies_until: float = 0.0
    cookie: bytes = b""  # what our asks for its copies echo (reach.ReturnCookies)
    proving: bool = False  # it asked for copies; we challenged it and wait for its proof
    relayed: bool = False  # it speaks from an address its hello does not claim: a relay

    @property
    def reached(self) -> bool:
        """What we send reaches it, as far as we know: it asked for no copies we still
        withhold, or its multicast is heard (so ours is likely heard there too)."""
        return not self.proving or self.heard_multicast != float("-inf")

    @property
    def path(self) -> str:
        """How its group datagrams reach us: 'multicast', 'unicast' (copies it sends us
        because its multicast does not arrive), or 'relay' (through ``mcast relay``, or a
        NAT: it speaks from an address it does not claim)."""
        return "relay" if self.relayed else "unicast" if self.asking else "multicast"

    @property
    def name(self) -> str:
        """The peer's chosen name ('?' until its hello arrived)."""
        return str(self.meta.get("name", "?"))

    @property
    def loss(self) -> float:
        """Fraction of this peer's group frames that never arrived (from sequence gaps)."""
        total = self.received + self.lost
        return self.lost / total if total else 0.0

    def serves(self, topic: str) -> bool:
        """True when the peer announced a handler for ``topic``."""
        return any(topic_matches(p, topic) for p in self.meta.get("serves", []))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "id": f"{self.node_id:016x}",
            "name": self.name,
            "address": format_endpoint(*self.address) if self.address else None,
            "meta": self.meta,
            "last_seen": self.last_seen,
            "received": self.received,
            "loss": round(self.loss, 4),
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "paths": {name: format_endpoint(*where) for name, where in self.paths.items()},
            "path": self.path,
        }


def topic_matches(pattern: str, topic: str) -> bool:
    """Exact match, or prefix match for a pattern ending in ``*``."""
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic
