"""Every event the cores report, in one place: membership, messages, requests, reliability.

``Event`` is the one base class. ``PeerEvent`` is the base of the four member events
(joined, updated, left, failed), which carry the peer. Reliability events (``Unrecoverable``,
``SlowReceiver``) and the transfer engines' events live here too, so an application matches
on types, never on strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .peers import Address, PeerInfo

__all__ = [
    "UNKNOWN_END",
    "AddressChanged",
    "Event",
    "Failed",
    "Gathered",
    "IdRenewed",
    "InterfaceDown",
    "InterfaceEvent",
    "InterfaceUp",
    "Joined",
    "Left",
    "Message",
    "PeerEvent",
    "PhaseChanged",
    "ReceiveState",
    "ReceiverFinished",
    "ReceiverRegistered",
    "RequestReceived",
    "SendPhase",
    "SlowReceiver",
    "TransferAnnounced",
    "TransferEvent",
    "TransferFinished",
    "TransferRefused",
    "Unrecoverable",
    "Updated",
]

UNKNOWN_END = (1 << 64) - 1  # an Unrecoverable's last_seq when the end is not known


class Event:
    """Base of every event a node, a stream or a transfer reports."""

    __slots__ = ()


@dataclass(frozen=True)
class PeerEvent(Event):
    """A change in the membership; ``peer`` is what we know of the member."""

    peer: PeerInfo


class Joined(PeerEvent):
    """A member appeared."""


class Updated(PeerEvent):
    """A member's metadata changed."""


class Left(PeerEvent):
    """A member said goodbye."""


class Failed(PeerEvent):
    """A member stopped sending heartbeats for longer than the failure timeout."""


@dataclass(frozen=True)
class InterfaceEvent(Event):
    """A change of one of the interfaces a node (or listener) uses; ``addresses`` are the
    interface's addresses of the group's family after the change."""

    name: str
    index: int
    addresses: tuple[str, ...]

    def describe(self) -> str:
        """One line for people."""
        if isinstance(self, InterfaceUp):
            return f"interface {self.name} is up: joined there"
        if isinstance(self, InterfaceDown):
            return f"interface {self.name} is down: nothing arrives there until it is back"
        return f"interface {self.name} now has {', '.join(self.addresses) or 'no address'}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        kind = {InterfaceUp: "up", InterfaceDown: "down"}.get(type(self), "address")
        record: dict[str, Any] = {
            "event": f"interface-{kind}",
            "iface": self.name,
            "index": self.index,
            "addresses": list(self.addresses),
        }
        if isinstance(self, AddressChanged):
            record["added"], record["removed"] = list(self.added), list(self.removed)
        return record


class InterfaceUp(InterfaceEvent):
    """An interface came up (or appeared) and the group was joined on it."""


class InterfaceDown(InterfaceEvent):
    """An interface went down (or away) and the group was left on it."""


@dataclass(frozen=True)
class AddressChanged(InterfaceEvent):
    """An interface's addresses changed; the next hello goes out from the new one."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdRenewed(Event):
    """Another node drew our id: we took a new one."""

    old_id: int
    new_id: int


@dataclass(slots=True)
class Message(Event):
    """A published message."""

    sender: int
    sender_name: str
    topic: str
    payload: bytes
    source: Address
    timestamp_us: int
    seq: int  # frame seq; for a reliable message, the stream seq of its first fragment
    reliable: bool = False
    iface: str | None = None  # the interface it arrived on (None where the runtime cannot tell)

    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


@dataclass(frozen=True)
class RequestReceived(Event):
    """A request for a topic this node serves; answer with ``Session.reply``."""

    request_id: int
    sender: int
    topic: str
    payload: bytes
    reply_to: Address


@dataclass(frozen=True)
class Gathered(Event):
    """The outcome of a request: who answered with what, and who did not."""

    request_id: int
    topic: str
    replies: dict[int, bytes]
    missing: list[int]
    complete: bool
    rtts: dict[int, float]


@dataclass(frozen=True)
class Unrecoverable(Event):
    """Reliable data from ``sender`` that can no longer be repaired: seqs first..last.

    ``reason``: ``window-passed`` (the sender no longer has it), ``repair-timeout`` (no
    repair came), ``too-large`` (a message above ``max_message``), ``message-timeout``,
    ``sender-gone`` (the sender left or failed with data missing), ``sender-failed`` (the
    sender went silent: anything it sent from ``first_seq`` on, ``last_seq`` being
    ``UNKNOWN_END``, did not arrive), ``memory-limit`` (the gaps alone outgrew the memory
    budget), ``subscriber-overflow`` (delivered, but a subscription queue was full).
    ``partial`` is True when a message was already partly received and is dropped with the
    gap.
    """

    sender: int
    first_seq: int
    last_seq: int
    reason: str
    partial: bool = False


@dataclass(frozen=True)
class SlowReceiver(Event):
    """Under ``slow_receiver="wait"``, a receiver whose acknowledgements stalled: no longer
    waited for. ``acked`` is the last seq it acknowledged."""

    peer: int
    acked: int


class SendPhase(str, Enum):
    """Where a file sender is (transfer/states.py has the transitions)."""

    REGISTER = "register"  # announcing, waiting for receivers to register
    DATA = "data"  # sending the blocks of a pass
    STATUS = "status"  # asking who misses what, before the next pass
    DONE = "done"  # every receiver finished, failed or was given up on


class ReceiveState(str, Enum):
    """Where a file receiver is (transfer/states.py has the transitions)."""

    WAITING = "waiting"  # for an announce
    RECEIVING = "receiving"
    COMPLETE = "complete"  # every file verified and in place
    FAILED = "failed"  # refused, interrupted by the sender, or failed to verify or write


@dataclass(frozen=True)
class TransferEvent(Event):
    """Base of the file transfer engines' events; ``session`` is the transfer's id."""

    session: int


@dataclass(frozen=True)
class PhaseChanged(TransferEvent):
    """The sender moved to ``phase``; ``pass_number`` counts the repair passes."""

    phase: SendPhase
    pass_number: int


@dataclass(frozen=True)
class ReceiverRegistered(TransferEvent):
    """A receiver registered with the sender."""

    receiver: int
    name: str
    address: Address


@dataclass(frozen=True)
class ReceiverFinished(TransferEvent):
    """A receiver is done: ``complete``, or failed for ``reason``."""

    receiver: int
    name: str
    complete: bool
    reason: str | None


@dataclass(frozen=True)
class TransferAnnounced(TransferEvent):
    """The receiver took an announced transfer (or refused it: a ``TransferFinished``
    follows)."""

    sender: Address
    files: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class TransferFinished(TransferEvent):
    """The receiver's outcome: ``COMPLETE``, or ``FAILED`` for ``reason``."""

    state: ReceiveState
    reason: str | None


@dataclass(frozen=True)
class TransferRefused(TransferEvent):
    """A waiting receiver refused what it heard (sealed without its key, another key, an
    announce it does not trust): said at the first such datagram, not when the wait ends.
    ``session`` is 0; ``reason`` names the fix."""

    reason: str
