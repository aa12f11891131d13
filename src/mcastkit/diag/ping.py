"""Multicast ping (in the spirit of omping), with no I/O: probes in, answers and statistics out.

Every node multicasts a probe each interval and unicasts one to each peer it knows. Peers are
found from the probes themselves (no host list), or pinned by address. Each probe is answered
on the path it came by (a multicast probe by a multicast answer carrying the prober's id, a
unicast probe by a unicast answer), so RTTs are per path.

Per peer and path, from the peer's probes: received, loss (from the peer's first probe and
from the first one that reached us, since multicast trees take time to build), duplicates,
reordering, the longest silence, RFC 3550 interarrival jitter, TTL seen and hop count. From
the answers to our probes: sent, answered, RTT min/avg/max/stddev/p50/p99.
Times are integers in nanoseconds, passed in.
"""

from __future__ import annotations

import math
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..addr import format_endpoint
from ..events import Event
from ..magics import PING_MAGIC
from ..peers import Address
from .seqs import DUPLICATE, SeqTracker

__all__ = ["PathStats", "PeerPaths", "PingSession", "decode_untrusted"]

MAGIC = PING_MAGIC


class PingKind(IntEnum):
    """A ping datagram: a probe, or the answer to one."""

    PROBE = 1
    ANSWER = 2


PROBE, ANSWER = PingKind.PROBE, PingKind.ANSWER
MULTICAST, UNICAST = 1, 2
PATH_NAMES = {MULTICAST: "multicast", UNICAST: "unicast"}
# magic, kind, path, ttl sent, sender id, seq, sender's send time (ns)
HEAD = struct.Struct("!4sBBBxQIQ")
# answers add: prober id, echoed seq, echoed send time, TTL the answerer saw on the probe
ANSWER_TAIL = struct.Struct("!QIQB3x")
RTT_SAMPLES = 100_000  # bounded memory for percentiles
WINDOW = 1024  # seqs remembered for duplicate detection
MAX_PEERS = 256  # peers tracked at once; more are refused (counted), never an unbounded table
# A peer that never answered one of our probes is unconfirmed (any host can forge a probe from
# any source): it gets a unicast probe only every 8th round, to find out, and it is forgotten
# after this much silence. A spoofed flood so draws at most MAX_PEERS / 8 probes a round.
UNCONFIRMED_SILENCE_NS = 5_000_000_000
UNCONFIRMED_EVERY = 8
# A confirmed peer silent this long (and 30 intervals) is no longer probed: forged answers
# that stopped cannot keep us probing a victim address; a real peer that comes back (it
# pings too) is probed again at once. A full table gives the slot of a peer silent for 3
# intervals to a newcomer.
CONFIRMED_SILENCE_NS = 30_000_000_000
EVICTABLE_ROUNDS = 3


@dataclass
class Packet:
    """A decoded probe or answer."""

    kind: int
    path: int
    ttl_sent: int
    sender: int
    seq: int
    sent_ns: int
    to: int = 0
    echo_seq: int = 0
    echo_sent_ns: int = 0
    echo_ttl_seen: int = 0


def decode_untrusted(data: bytes) -> Packet | None:
    """A probe or answer, or None for anything else (never raises)."""
    if len(data) < HEAD.size or data[:4] != MAGIC:
        return None
    _magic, kind, path, ttl_sent, sender, seq, sent_ns = HEAD.unpack_from(data)
    if kind not in (PROBE, ANSWER) or path not in PATH_NAMES or sender == 0:
        return None
    packet = Packet(kind, path, ttl_sent, sender, seq, sent_ns)
    if kind == ANSWER:
        if len(data) < HEAD.size + ANSWER_TAIL.size:
            return None
        (packet.to, packet.echo_seq, packet.echo_sent_ns, packet.echo_ttl_seen) = (
            ANSWER_TAIL.unpack_from(data, HEAD.size)
        )
    return packet


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return math.nan
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class PathStats:
    """One path (multicast or unicast) to one peer."""

    sent: int = 0
    answered: int = 0
    rtts_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RTT_SAMPLES))
    seqs: SeqTracker = field(default_factory=lambda: SeqTracker(WINDOW))
    last_arrival_ns: int = 0
    longest_gap_ns: int = 0
    ttl_seen: int | None = None
    ttl_sent: int | None = None
    _pending: dict[int, int] = field(default_factory=dict)  # our seq -> send time

    def on_probe(
        self, seq: int, sent_ns: int, now_ns: int, ttl_seen: int | None, ttl_sent: int
    ) -> None:
        """Account for one probe from the peer."""
        if self.seqs.take(seq, now_ns - sent_ns) == DUPLICATE:
            return
        if self.last_arrival_ns:
            self.longest_gap_ns = max(self.longest_gap_ns, now_ns - self.last_arrival_ns)
        self.last_arrival_ns = now_ns
        self.ttl_seen = ttl_seen
        self.ttl_sent = ttl_sent

    def on_sent(self, seq: int, now_ns: int) -> None:
        """We sent a probe to this peer on this path."""
        self.sent += 1
        self._pending[seq] = now_ns
        if len(self._pending) > WINDOW:
            self._pending.pop(next(iter(self._pending)))

    def on_answer(self, seq: int, now_ns: int) -> None:
        """An answer to one of our probes arrived."""
        sent_at = self._pending.pop(seq, None)
        if sent_at is None:
            return  # duplicate or too late
        self.answered += 1
        self.rtts_ms.append((now_ns - sent_at) / 1e6)

    def summary(self, now_ns: int, timeout_ns: int) -> dict[str, Any]:
        """Plain data for tables and JSON."""
        in_flight = sum(1 for sent_at in self._pending.values() if now_ns - sent_at < timeout_ns)
        settled = self.sent - in_flight
        rtts = sorted(self.rtts_ms)
        mean = sum(rtts) / len(rtts) if rtts else math.nan
        stddev = math.sqrt(sum((r - mean) ** 2 for r in rtts) / len(rtts)) if rtts else math.nan
        seqs = self.seqs
        expected_total = max(seqs.highest, 0)
        expected_since_first = seqs.highest - seqs.first + 1 if seqs.received else 0
        return {
            "sent": self.sent,
            "answered": self.answered,
            "answer_loss": _ratio(settled - self.answered, settled),
            "received": seqs.received,
            "loss": _ratio(expected_total - seqs.received, expected_total),
            "loss_since_first": _ratio(expected_since_first - seqs.received, expected_since_first),
            "duplicates": seqs.duplicates,
            "reordered": seqs.reordered,
            "longest_gap_ms": round(self.longest_gap_ns / 1e6, 3),
            "jitter_ms": round(seqs.jitter_ns / 1e6, 4),
            "rtt_ms": {
                "min": _round(rtts[0] if rtts else math.nan),
                "avg": _round(mean),
                "max": _round(rtts[-1] if rtts else math.nan),
                "stddev": _round(stddev),
                "p50": _round(_percentile(rtts, 0.5)),
                "p99": _round(_percentile(rtts, 0.99)),
            },
            "ttl_seen": self.ttl_seen,
            "hops": None
            if self.ttl_seen is None or self.ttl_sent is None
            else self.ttl_sent - self.ttl_seen,
        }


def _ratio(part: int, whole: int) -> float | None:
    return None if whole <= 0 else round(max(0, part) / whole, 6)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


@dataclass
class PeerPaths:
    """Everything known about one peer."""

    node_id: int
    address: Address
    first_seen_ns: int
    multicast: PathStats = field(default_factory=PathStats)
    unicast: PathStats = field(default_factory=PathStats)
    last_heard_ns: int = 0
    found_round: int = 0  # our unicast round when it was found

    @property
    def confirmed(self) -> bool:
        """It answered a probe of ours: it hears us at the address we know."""
        return bool(self.multicast.answered or self.unicast.answered)

    def path(self, kind: int) -> PathStats:
        """The stats of one path."""
        return self.multicast if kind == MULTICAST else self.unicast


class PingSession:
    """One ping node's state."""

    def __init__(
        self,
        node_id: int,
        *,
        now_ns: int,
        interval_ns: int,
        ttl: int,
        answer_timeout_ns: int = 1_000_000_000,
        pinned: list[Address] | None = None,
        max_peers: int = MAX_PEERS,
        count: int | None = None,
    ) -> None:
        self.max_peers = max_peers
        self.count = count  # rounds of probes to send on each path (None: no end)
        self.node_id = node_id
        self.interval_ns = interval_ns
        self.ttl = ttl
        self.answer_timeout_ns = answer_timeout_ns
        self.pinned = list(pinned or [])
        # By (id, host): a peer heard on two of our links (or from two of its interfaces)
        # is one entry per path, each with its own loss and RTT.
        self.peers: dict[tuple[int, str], PeerPaths] = {}
        self.counters: Counter[str] = Counter()
        self.started_ns = now_ns
        self._next_multicast_ns = now_ns
        self._next_unicast_ns = now_ns + interval_ns // 2
        # Probes and answers count separately: a peer's probe seqs must be gap-free.
        self._seq: dict[tuple[int, int], int] = {
            (kind, path): 0 for kind in (PROBE, ANSWER) for path in PATH_NAMES
        }
        self._out: list[tuple[bytes, Address | None]] = []  # for ``datagrams_to_send``

    def next_due_ns(self) -> int:
        """When ``tick`` must run next."""
        return min(self._next_multicast_ns, self._next_unicast_ns)

    # --- the core contract (core.Core): seconds of the runtime's monotonic clock ---------

    def receive_datagram(
        self, data: bytes, source: Address, now: float, ttl: int | None = None
    ) -> None:
        """Take one datagram (``ttl``: as it arrived, where the kernel says)."""
        self._out.extend(self.receive(data, source, ttl, int(now * 1e9)))

    def handle_timer(self, now: float) -> None:
        """The probes due by ``now``."""
        now_ns = int(now * 1e9)
        if now_ns >= self.next_due_ns():
            self._out.extend(self.tick(now_ns))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address | None]]:
        """Probes and answers to send; None as destination: the group."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        """Ping reports through ``summary``: no events."""
        return None

    def next_timer(self) -> float | None:
        """When the next probes are due (None: every round of ``count`` went out)."""
        return None if self.probed_all else self.next_due_ns() / 1e9

    @property
    def probed_all(self) -> bool:
        """Every one of ``count`` rounds went out on both paths."""
        return self.count is not None and min(self.rounds, self.unicast_rounds) >= self.count

    def _head(self, kind: int, path: int, now_ns: int) -> bytes:
        self._seq[kind, path] += 1
        return HEAD.pack(MAGIC, kind, path, self.ttl, self.node_id, self._seq[kind, path], now_ns)

    @property
    def rounds(self) -> int:
        """Multicast probes sent so far."""
        return self._seq[PROBE, MULTICAST]

    @property
    def unicast_rounds(self) -> int:
        """Unicast probe rounds sent so far (half an interval behind the multicast ones)."""
        return self._seq[PROBE, UNICAST]

    @staticmethod
    def _advance(due: int, now_ns: int, interval: int) -> int:
        due += interval
        return due if due > now_ns else now_ns + interval  # fell behind: do not burst

    def tick(self, now_ns: int) -> list[tuple[bytes, Address | None]]:
        """Probes due now: the group's, then half an interval later one to each peer.

        Staggering keeps each path's probes and answers out of the other's way, so neither
        path's RTT includes the other's processing.
        """
        out: list[tuple[bytes, Address | None]] = []
        limit = self.count
        if now_ns >= self._next_multicast_ns and (limit is None or self.rounds < limit):
            self._next_multicast_ns = self._advance(
                self._next_multicast_ns, now_ns, self.interval_ns
            )
            out.append((self._head(PROBE, MULTICAST, now_ns), None))
            seq = self._seq[PROBE, MULTICAST]
            for peer in self.peers.values():
                peer.multicast.on_sent(seq, now_ns)
        if now_ns >= self._next_unicast_ns and (limit is None or self.unicast_rounds < limit):
            self._next_unicast_ns = self._advance(self._next_unicast_ns, now_ns, self.interval_ns)
            self._expire(now_ns)
            # One seq per round for every peer, so each peer sees a gap-free sequence.
            probe = self._head(PROBE, UNICAST, now_ns)
            seq = self._seq[PROBE, UNICAST]
            known = set()
            for peer in self.peers.values():
                if (
                    not peer.confirmed
                    and peer.address not in self.pinned
                    and (seq - peer.found_round - 1) % UNCONFIRMED_EVERY
                ):
                    continue  # a forged probe names any source: few probes until it answers
                if self._retired(peer, now_ns) and peer.address not in self.pinned:
                    continue  # silent for good: no more probes until it is heard again
                peer.unicast.on_sent(seq, now_ns)
                out.append((probe, peer.address))
                known.add(peer.address)
            out.extend((probe, address) for address in self.pinned if address not in known)
        self.counters["probes-sent"] += len(out)
        return out

    def receive(
        self, data: bytes, source: Address, ttl_seen: int | None, now_ns: int
    ) -> list[tuple[bytes, Address | None]]:
        """Handle one datagram; return the answer to send, if any (never raises)."""
        packet = decode_untrusted(data)
        if packet is None:
            self.counters["invalid"] += 1
            return []
        if packet.sender == self.node_id:
            self.counters["own"] += 1
            return []
        key = (packet.sender, source[0])
        peer = self.peers.get(key)
        if peer is None:
            if len(self.peers) >= self.max_peers and not self._evict_silent(now_ns):
                self.counters["peers-refused"] += 1
                return []
            peer = self.peers[key] = PeerPaths(packet.sender, source, now_ns)
            peer.found_round = self._seq[PROBE, UNICAST]
            self.counters["peers-found"] += 1
        peer.last_heard_ns = now_ns
        if packet.path == UNICAST:
            peer.address = source  # unicast sources are the peer's reply address
        if packet.kind == PROBE:
            stats = peer.path(packet.path)
            stats.on_probe(packet.seq, packet.sent_ns, now_ns, ttl_seen, packet.ttl_sent)
            answer = self._head(ANSWER, packet.path, now_ns) + ANSWER_TAIL.pack(
                packet.sender, packet.seq, packet.sent_ns, ttl_seen or 0
            )
            return [(answer, None if packet.path == MULTICAST else source)]
        if packet.to == self.node_id:
            peer.path(packet.path).on_answer(packet.echo_seq, now_ns)
        return []

    def _evict_silent(self, now_ns: int) -> bool:
        """Make room for a newcomer: drop the longest-silent peer, if silent long enough."""
        key, peer = min(self.peers.items(), key=lambda item: item[1].last_heard_ns)
        if now_ns - peer.last_heard_ns <= EVICTABLE_ROUNDS * self.interval_ns:
            return False
        del self.peers[key]
        self.counters["peers-evicted"] += 1
        return True

    def _retired(self, peer: PeerPaths, now_ns: int) -> bool:
        """A confirmed peer silent so long that probing it would only feed a victim."""
        silence = max(CONFIRMED_SILENCE_NS, 30 * self.interval_ns)
        return peer.confirmed and now_ns - peer.last_heard_ns > silence

    def _expire(self, now_ns: int) -> None:
        """Forget unconfirmed peers gone silent: spoofed ids do not pile up."""
        gone = [
            key
            for key, peer in self.peers.items()
            if not peer.confirmed and now_ns - peer.last_heard_ns > UNCONFIRMED_SILENCE_NS
        ]
        for key in gone:
            del self.peers[key]
        self.counters["peers-expired"] += len(gone)

    def summary(self, now_ns: int, *, final: bool = False) -> dict[str, Any]:
        """Every peer with both paths, for tables and JSON.

        While running, a probe is in flight for ``answer_timeout_ns``. In the final summary
        only the last interval's probes are: the run waited that long for their answers, and
        an older probe still unanswered is lost (counting it as in flight hid answer loss).
        """
        window = min(self.answer_timeout_ns, self.interval_ns) if final else self.answer_timeout_ns
        return {
            "elapsed_s": round((now_ns - self.started_ns) / 1e9, 3),
            "interval_s": self.interval_ns / 1e9,
            "peers": [
                {
                    "id": f"{peer.node_id:016x}",
                    "address": format_endpoint(*peer.address),
                    # A path that went away stays in the table with its figures: say so.
                    "silent_s": round(max(0, now_ns - peer.last_heard_ns) / 1e9, 3),
                    "multicast": peer.multicast.summary(now_ns, window),
                    "unicast": peer.unicast.summary(now_ns, window),
                }
                for peer in self.peers.values()
            ],
        }


def verdict(summary: dict[str, Any], max_loss: float | None) -> tuple[int, list[str]]:
    """Exit code and reasons: 1 when multicast fails while unicast works, or loss is too high."""
    reasons: list[str] = []
    if not summary["peers"]:
        return 1, ["no peers answered: start `mcast ping` on other hosts, or pin one with --peer"]
    for peer in summary["peers"]:
        mc, uc = peer["multicast"], peer["unicast"]
        name = f"{peer['address']} [{peer['id'][:8]}]"
        if mc["received"] == 0 and (uc["received"] > 0 or uc["answered"] > 0):
            reasons.append(
                f"{name}: unicast works but no multicast arrives (TTL, IGMP snooping without a "
                "querier, firewall, or routing; try `mcast doctor` on both hosts). Where the "
                f"network carries no multicast (a cloud, a VPN), give members --peer "
                f"{peer['address'].rsplit(':', 1)[0]} or join sites with `mcast relay`"
            )
            continue
        if mc["answer_loss"] == 1.0 and (mc["received"] > 0 or uc["answered"] > 0):
            # It reaches us, but none of our multicast probes reached it: one direction only.
            reasons.append(
                f"{name}: our multicast probes go unanswered while it reaches us (a one-way "
                "path: our TTL, our firewall or the switch's snooping on our port; try `mcast "
                "doctor` here)"
            )
            continue
        if max_loss is not None:
            for path_name, stats in (("multicast", mc), ("unicast", uc)):
                # Loss of the peer's probes to us, and of its answers to our probes: either
                # direction failing is the path failing.
                for what, loss in (
                    ("loss", stats["loss_since_first"]),
                    ("answer loss", stats["answer_loss"]),
                ):
                    if loss is not None and loss > max_loss:
                        reasons.append(
                            f"{name}: {path_name} {what} {loss:.1%} exceeds --max-loss "
                            f"{max_loss:.1%}"
                        )
    return (1 if reasons else 0), reasons
