"""Which members our multicast reaches, with no I/O: unicast seeds, member addresses spread by
gossip, and unicast copies of the group's datagrams for members that multicast does not reach.

A member learns for itself whether multicast *from* each peer arrives: the runtime says which
datagrams came in on the group socket. A peer it is watching (one met by unicast: a seed, a
gossiped address, a peer that contacted it directly, or every peer with multicast off) whose
multicast has not arrived lately is asked for copies: unicast frames to it carry
``Flag.WANT_COPIES``, one a heartbeat while it asks. A member asked that way sends the asker a
unicast copy of every group datagram (same bytes, same group seq) until the asks stop for a
failure timeout. Copies and multicast originals share one replay window, so a datagram that
arrives both ways is delivered once (the second counted as a duplicate).

``Session`` owns one ``Reach``; this module touches no socket and reads no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol

from .addr import format_endpoint
from .peers import Address, PeerInfo
from .session_port import SendFrame
from .wire import Flag, FrameType


class SendHello(Protocol):
    """The session's hello sender (its ``_send_hello``)."""

    def __call__(self, now: float, *, flags: int, to: Address | None) -> None: ...


__all__ = ["GOSSIP_ENTRIES", "CopyTargets", "Reach", "decode_peers", "encode_peers"]

# PEERS payload: entry count (2), then per entry: node id (8), family (1: 4 or 6), port (2),
# address (4 or 16). 48 IPv6 entries fit one 1,472-byte datagram with room for the header.
_COUNT = struct.Struct("!H")
_ENTRY = struct.Struct("!QBH")
GOSSIP_ENTRIES = 48
ADDRESSES_KEY = "_ua"  # in a hello: where the sender hears unicast ("host:port", each path)
SILENT_HEARTBEATS = 1.5  # a watched peer whose multicast was not heard for this long: ask
MAX_CONTACTED = 4096
GOSSIP_EVERY = 10  # heartbeats between two member lists sent to each unicast-reached peer


def encode_peers(entries: Iterable[tuple[int, Address]]) -> bytes:
    """A PEERS payload of at most ``GOSSIP_ENTRIES`` (id, address) pairs."""
    parts: list[bytes] = []
    for node_id, (host, port) in entries:
        if len(parts) >= GOSSIP_ENTRIES:
            break
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            continue  # not an address literal (cannot happen for a datagram's source)
        parts.append(_ENTRY.pack(node_id, address.version, port) + address.packed)
    return _COUNT.pack(len(parts)) + b"".join(parts)


def decode_peers(payload: bytes) -> list[tuple[int, Address]] | None:
    """The (id, address) pairs of a PEERS payload, or None if it is malformed."""
    if len(payload) < _COUNT.size:
        return None
    (count,) = _COUNT.unpack_from(payload)
    if count > GOSSIP_ENTRIES:
        return None
    entries: list[tuple[int, Address]] = []
    offset = _COUNT.size
    for _ in range(count):
        if offset + _ENTRY.size > len(payload):
            return None
        node_id, family, port = _ENTRY.unpack_from(payload, offset)
        offset += _ENTRY.size
        size = {4: 4, 6: 16}.get(family)
        if size is None or offset + size > len(payload) or not port or not node_id:
            return None
        raw = payload[offset : offset + size]
        offset += size
        address = ipaddress.IPv4Address(raw) if family == 4 else ipaddress.IPv6Address(raw)
        entries.append((node_id, (str(address), port)))
    return entries if offset == len(payload) else None


COOKIE = 8  # bytes of a return-routability cookie
_NO_POSITION = bytes(8)  # a challenge's or proof's position when there is no stream


class ReturnCookies:
    """Proof that an address hears what we send it (return routability), kept nowhere: a
    cookie is a keyed hash of the address, with a secret of this process. Copies go only to
    an address that echoed its cookie, so a forged ask from a spoofed address draws one
    datagram of the ask's size to it (the challenge), never the group's traffic."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(16)

    def of(self, address: Address) -> bytes:
        """The cookie ``address`` must echo."""
        where = f"{address[0]}|{address[1]}".encode()
        return hmac.new(self._secret, where, hashlib.sha256).digest()[:COOKIE]

    def proves(self, address: Address, proof: bytes) -> bool:
        """True when ``proof`` is ``address``'s cookie."""
        return len(proof) == COOKIE and hmac.compare_digest(proof, self.of(address))


@dataclass
class Reach:
    """The unicast side of one session's membership."""

    multicast: bool = True  # False: nothing goes to the group; every member gets copies
    seeds: tuple[Address, ...] = ()
    heartbeat: float = 1.0
    failure_timeout: float = 3.0
    secret: bytes | None = None  # the cookies' (the session's randomness; None: the OS's)

    def __post_init__(self) -> None:
        self.targets: list[Address] = []  # where copies go now (recomputed on each tick)
        # Addresses we said hello to by unicast (seeds, gossip): whoever answers from one is
        # watched. Bounded: a flood of gossip cannot grow it.
        self.contacted: dict[Address, None] = dict.fromkeys(self.seeds)
        self._ticks = 0
        self._send: SendFrame | None = None
        self._hello: SendHello | None = None
        self._budget: Callable[[float], bool] = lambda now: True
        self.cookies = ReturnCookies(self.secret)

    def connect(self, send: SendFrame, hello: SendHello, budget: Callable[[float], bool]) -> None:
        """The session's port: how to send a frame or a hello, and the budget for unicast
        hellos to strangers (gossip spends it like answers to newcomers)."""
        self._send, self._hello, self._budget = send, hello, budget

    def contact(self, address: Address) -> bool:
        """Remember a unicast hello to ``address``; False if it was contacted already."""
        if address in self.contacted:
            return False
        if len(self.contacted) >= MAX_CONTACTED:
            del self.contacted[next(iter(self.contacted))]
        self.contacted[address] = None
        return True

    def unanswered_seeds(self, peers: Iterable[PeerInfo]) -> list[Address]:
        """Seeds no member speaks from (not started yet, restarted, or lost our hello)."""
        speaking = {peer.address for peer in peers}
        return [seed for seed in self.seeds if seed not in speaking]

    @property
    def active(self) -> bool:
        """True when group datagrams need more than one multicast send."""
        return bool(self.targets) or not self.multicast

    # --- what we learn -------------------------------------------------------------------

    def wants_copies(
        self, peer: PeerInfo, source: Address, payload: bytes, position: bytes, now: float
    ) -> bytes | None:
        """``peer`` asked for copies (it does not hear our multicast) in a frame with
        ``payload``: copies to where it speaks from, until it stops asking for a failure
        timeout. Only a member (its hello seen) that proved it hears us at ``source`` (its
        ask echoes the cookie we gave that address) is copied to. The payload of the
        heartbeat to answer with (``position`` ours): a challenge carrying the cookie when
        the ask proved nothing, a bare "heard you" when copies start; None: no answer."""
        if not peer.hello_seen:
            return None
        if not self.cookies.proves(source, payload[len(_NO_POSITION) :]):
            peer.proving = peer.copies_until <= now  # no copies yet: not reached yet
            return (position or _NO_POSITION) + self.cookies.of(source)  # prove it first
        peer.proving = False
        peer.watched = True  # it is beyond our multicast: likely we are beyond its too
        started = peer.copies_until <= now
        if started:
            self.targets.append(source)
        peer.copies_until = now + self.failure_timeout
        return position if started else None

    @staticmethod
    def challenged(peer: PeerInfo, payload: bytes, flags: int) -> tuple[bytes, bool]:
        """A heartbeat from ``peer``: when it is a challenge (unicast, asking nothing), the
        cookie it carries is what our asks to it echo from now on. The payload's position
        part (an ask's too), and whether the cookie is new (then worth an ask at once; the
        same one again waits for the next round, so challenges and asks never bounce)."""
        if len(payload) != len(_NO_POSITION) + COOKIE:
            return payload, False
        new = False
        if flags & (Flag.UNICAST | Flag.WANT_COPIES) == Flag.UNICAST:
            cookie = payload[len(_NO_POSITION) :]
            new, peer.cookie = cookie != peer.cookie, cookie
        payload = payload[: len(_NO_POSITION)]
        return (b"" if payload == _NO_POSITION else payload), new

    @staticmethod
    def ask(peer: PeerInfo, position: bytes) -> bytes:
        """The payload of a heartbeat asking ``peer`` for copies: our position, and the
        cookie it gave us (its proof that we hear it)."""
        return (position or _NO_POSITION) + peer.cookie if peer.cookie else position

    @staticmethod
    def claims(peer: PeerInfo, meta: dict[str, object], source: Address) -> None:
        """Take the addresses a hello's ``meta`` says its sender hears unicast on (the key is
        removed): heard from none of them, the peer is behind a relay (or a NAT)."""
        claimed = meta.pop(ADDRESSES_KEY, None)
        if isinstance(claimed, list) and claimed:
            peer.relayed = format_endpoint(*source) not in claimed

    def asks(self, peer: PeerInfo, now: float) -> bool:
        """True when we ask ``peer`` for copies: multicast off, or a watched peer whose
        multicast we have not heard for ``SILENT_HEARTBEATS`` heartbeats (never heard: at
        once, so what it publishes right after we met reaches us)."""
        peer.asking = not self.multicast or (
            peer.watched and now - peer.heard_multicast > SILENT_HEARTBEATS * self.heartbeat
        )
        return peer.asking

    # --- what we send --------------------------------------------------------------------

    def round(self, peers: Iterable[PeerInfo], position: bytes, now: float) -> None:
        """Once a heartbeat: ask the members we do not hear by multicast for copies (a
        unicast heartbeat, ``position`` its payload), now and then tell those met by unicast
        who the members are, and say hello again to seeds that are silent."""
        assert self._send is not None and self._hello is not None
        members = list(peers)
        asking, gossip = self.tick(members, now)
        for peer in asking:
            assert peer.address is not None
            self._send(FrameType.HEARTBEAT, "", self.ask(peer, position), now,
                       flags=Flag.WANT_COPIES, to=peer.address)  # fmt: skip
        for peer in members if gossip else ():
            if peer.watched and peer.address is not None:
                self.send_peers(members, peer.address, now)
        for seed in self.unanswered_seeds(members):
            self._hello(now, flags=Flag.WANT_COPIES, to=seed)

    def greet_seeds(self, now: float) -> None:
        """A unicast hello to every seed, asking for copies until its multicast is heard."""
        assert self._hello is not None
        for seed in self.seeds:
            self._hello(now, flags=Flag.WANT_COPIES, to=seed)

    def send_peers(self, peers: Iterable[PeerInfo], to: Address, now: float) -> None:
        """The members' addresses, to ``to`` (which is left out of the list)."""
        assert self._send is not None
        members = [m for m in self.members(peers) if m[1] != to]
        self._send(FrameType.PEERS, "", encode_peers(members), now, to=to)

    def on_peers(self, payload: bytes, own_id: int, known: Mapping[int, PeerInfo],
                 now: float) -> bool:  # fmt: skip
        """A member's list: hello to each member we do not know yet (once per address, within
        the budget). False when the payload is malformed."""
        assert self._hello is not None
        entries = decode_peers(payload)
        if entries is None:
            return False
        for node_id, address in entries:
            if node_id == own_id or node_id in known or not self.contact(address):
                continue
            if self._budget(now):
                self._hello(now, flags=Flag.WANT_COPIES, to=address)
        return True

    def tick(self, peers: Iterable[PeerInfo], now: float) -> tuple[list[PeerInfo], bool]:
        """Once a heartbeat: the peers to ask for copies now (each gets a unicast heartbeat
        flagged WANT_COPIES), and whether this is a round that sends member lists."""
        asking: list[PeerInfo] = []
        targets: list[Address] = []
        for peer in peers:
            if self.asks(peer, now) and peer.address is not None:
                asking.append(peer)
            if peer.copies_until > now and peer.address is not None:
                targets.append(peer.address)
        self.targets = targets
        self._ticks += 1
        return asking, self._ticks % GOSSIP_EVERY == 0

    def expand(self, out: list[tuple[bytes, Address | None]]) -> list[tuple[bytes, Address | None]]:
        """The group datagrams of ``out`` again as unicast copies, one run per target (runs
        of one destination leave in one GSO call); with multicast off, only the copies."""
        group = [data for data, to in out if to is None]
        if not group:
            return out
        result = out if self.multicast else [item for item in out if item[1] is not None]
        for target in self.targets:
            result.extend(zip(group, repeat(target)))  # tuples made in C: this runs per message
        return result

    @staticmethod
    def members(peers: Iterable[PeerInfo]) -> Iterator[tuple[int, Address]]:
        """(id, address) of every member that said hello, for a PEERS list."""
        for peer in peers:
            if peer.hello_seen and peer.address is not None:
                yield peer.node_id, peer.address


class CopyTargets:
    """Where a sender that is not a group member (``send-file``) sends unicast copies of
    what it sends the group: receivers it was given, and those that asked (until their asks
    stop for ``hold`` seconds; at most ``MAX_ASKERS`` of them), once they proved they hear
    us at the address they ask from."""

    MAX_ASKERS = 256

    def __init__(self, named: Iterable[Address] = (), hold: float = 5.0) -> None:
        self.named = list(dict.fromkeys(named))
        self.hold = hold
        self.cookies = ReturnCookies()  # askers prove they hear us where they ask from
        self._asked: dict[Address, float] = {}

    def want(self, source: Address, now: float, proof: bytes) -> bool:
        """``source`` asked for copies, echoing ``proof``; False when that is not its cookie
        (the caller then sends it one) or the table is full of live askers."""
        if not self.cookies.proves(source, proof):
            return False
        if source not in self._asked and len(self._asked) >= self.MAX_ASKERS:
            self.current(now)  # make room from the expired first
            if len(self._asked) >= self.MAX_ASKERS:
                return False
        self._asked[source] = now + self.hold
        return True

    def current(self, now: float) -> list[Address]:
        """Every target now (expired askers forgotten)."""
        for address in [a for a, until in self._asked.items() if until <= now]:
            del self._asked[address]
        return self.named + [a for a in self._asked if a not in self.named]
