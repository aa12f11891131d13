"""``mcast top``'s core, no I/O: what a passive capture shows of the groups on one link.

It is fed IP packets (IPv4 or IPv6, header first, as a cooked AF_PACKET socket gives them)
and keeps, per group and port: senders, packets and bytes (rates between snapshots), the
loss estimated from the sequence numbers of mcastkit's own datagrams (group frames, bench,
ping), and what the datagrams are. IGMP and MLD tell joins and leaves (who reported which
group, as they happen) and the querier. Hostile or malformed packets are counted, never
raised on; every table is bounded.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

from ..addr import format_endpoint
from ..magics import DatagramKind, kind_of
from ..wire import Flag, decode_frame_untrusted
from .bench import HEAD as BENCH_HEAD
from .ping import decode_untrusted as decode_probe

__all__ = ["MAX_GROUPS", "TopView"]

MAX_GROUPS = 1024  # group:port rows kept; more are counted as "overflow"
MAX_SENDERS = 256  # sequence trackers per row
MAX_MEMBERS = 1024  # reporting hosts per group
MAX_EVENTS = 256  # joins, leaves and queries kept for the view
MEMBER_TIMEOUT = 260.0  # a member unheard this long is gone (IGMP's 2 x 125 s + 10 s)
SEQ_WINDOW = 1024  # recent sequence numbers per sender, to tell duplicates from losses
SOLICITED_NODE = ip_network("ff02::1:ff00:0/104")
_UDP = struct.Struct("!HHHH")
_MLD_V2_RECORD = struct.Struct("!BBH16s")
_IGMP_V3_RECORD = struct.Struct("!BBH4s")
# IGMPv3 / MLDv2 record types: MODE_IS_INCLUDE .. BLOCK_OLD_SOURCES (RFC 3376, RFC 3810)
_JOINING = {2, 4}  # (changed to) exclude: any source
_SOURCES_ADDED = {1, 5}  # include these sources
_LEAVING_IF_EMPTY = {3}  # change to include {} : a leave
_BLOCKING = {6}


@dataclass
class _Sequence:
    """One sender's sequence numbers: gaps are losses until the number arrives late."""

    highest: int = -1
    lost: int = 0
    received: int = 0
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=SEQ_WINDOW))

    def see(self, seq: int) -> None:
        if seq in self.recent:
            return  # a duplicate (a repair, a second path): neither new nor a loss
        self.recent.append(seq)
        self.received += 1
        if self.highest < 0:
            self.highest = seq
        elif seq > self.highest:
            self.lost += min(seq - self.highest - 1, 1 << 20)  # a jump of a restart: bounded
            self.highest = seq
        elif self.lost:
            self.lost -= 1  # late, counted lost when the gap opened


@dataclass
class _Row:
    """One group and port: what was sent to it, by whom."""

    packets: int = 0
    bytes: int = 0
    shown_packets: int = 0  # at the last snapshot: rates are the difference
    shown_bytes: int = 0
    sources: set[str] = field(default_factory=set)
    kinds: dict[str, int] = field(default_factory=dict)
    sequences: dict[tuple[str, int], _Sequence] = field(default_factory=dict)
    last_seen: float = 0.0

    def loss(self) -> float | None:
        lost = sum(s.lost for s in self.sequences.values())
        received = sum(s.received for s in self.sequences.values())
        return None if not received else lost / (lost + received)


@dataclass
class Querier:
    """The host that sent the last general query, and how."""

    address: str
    protocol: str  # "IGMPv3", "MLDv2", ...
    heard: float


class TopView:
    """The link's groups as the packets fed so far show them."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], _Row] = {}
        self.members: dict[str, dict[str, float]] = {}  # group -> reporting host -> heard
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.queriers: dict[int, Querier] = {}  # by family
        self.counters: dict[str, int] = {}
        self._shown_at: float | None = None
        self._event_number = 0
        self._left: dict[tuple[str, str], float] = {}  # (host, group): its last leave

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # --- packets ----------------------------------------------------------------------

    def on_packet(self, packet: bytes, now: float) -> None:
        """Account one IP packet (never raises)."""
        try:
            self._on_packet(packet, now)
        except (IndexError, ValueError, struct.error):
            self._count("malformed")

    def _on_packet(self, packet: bytes, now: float) -> None:
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            header = (packet[0] & 0x0F) * 4
            if header < 20 or len(packet) < header:
                self._count("malformed")
                return
            protocol = packet[9]
            source: IPv4Address | IPv6Address = IPv4Address(packet[12:16])
            destination: IPv4Address | IPv6Address = IPv4Address(packet[16:20])
            if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:
                return  # a later fragment: its bytes belong to a datagram counted already
            body = packet[header:]
        elif version == 6:
            if len(packet) < 40:
                self._count("malformed")
                return
            protocol, offset = packet[6], 40
            source, destination = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
            while protocol in (0, 43, 60):  # hop-by-hop, routing, destination options
                protocol, offset = packet[offset], offset + 8 * (packet[offset + 1] + 1)
            body = packet[offset:]
        else:
            self._count("not-ip")
            return
        if protocol == 17 and destination.is_multicast:
            self._on_udp(str(source), str(destination), body, now)
        elif protocol == 2 and version == 4:
            self._on_igmp(str(source), body, now)
        elif protocol == 58 and body and body[0] in (130, 131, 132, 143):
            self._on_mld(str(source), body, now)

    def _on_udp(self, source: str, group: str, body: bytes, now: float) -> None:
        if len(body) < _UDP.size:
            self._count("malformed")
            return
        source_port, port, _length, _checksum = _UDP.unpack_from(body)
        row = self.rows.get((group, port))
        if row is None:
            if len(self.rows) >= MAX_GROUPS:
                self._count("overflow")
                return
            row = self.rows[(group, port)] = _Row()
        payload = body[_UDP.size :]
        row.packets += 1
        row.bytes += len(payload)
        row.last_seen = now
        sender = format_endpoint(source, source_port)
        if len(row.sources) < MAX_SENDERS:
            row.sources.add(sender)
        kind, stream, seq = _identify(payload)
        row.kinds[kind] = row.kinds.get(kind, 0) + 1
        if seq is None:
            return
        tracker = row.sequences.get((sender, stream))
        if tracker is None:
            if len(row.sequences) >= MAX_SENDERS:
                return
            tracker = row.sequences[(sender, stream)] = _Sequence()
        tracker.see(seq)

    # --- memberships ------------------------------------------------------------------

    def _on_igmp(self, source: str, body: bytes, now: float) -> None:
        kind = body[0]
        if kind == 0x11:
            group = IPv4Address(body[4:8])
            if int(group) == 0:  # a general query names the querier
                version = 3 if len(body) >= 12 else (2 if body[1] else 1)
                self._querier(4, source, f"IGMPv{version}", now)
        elif kind in (0x12, 0x16):
            self._member(source, str(IPv4Address(body[4:8])), "join", now)
        elif kind == 0x17:
            self._member(source, str(IPv4Address(body[4:8])), "leave", now)
        elif kind == 0x22:
            self._records(source, body, 8, _IGMP_V3_RECORD, 4, now)

    def _on_mld(self, source: str, body: bytes, now: float) -> None:
        kind = body[0]
        if kind == 130:
            if int(IPv6Address(body[8:24])) == 0:
                self._querier(6, source, "MLDv2" if len(body) >= 28 else "MLDv1", now)
        elif kind in (131, 132):
            action = "join" if kind == 131 else "leave"
            self._member(source, str(IPv6Address(body[8:24])), action, now)
        elif kind == 143:
            self._records(source, body, 8, _MLD_V2_RECORD, 16, now)

    def _records(
        self, source: str, body: bytes, offset: int, record: struct.Struct, size: int, now: float
    ) -> None:
        """The group records of an IGMPv3 or MLDv2 report."""
        count = struct.unpack_from("!H", body, 6)[0]
        for _ in range(min(count, 256)):
            kind, aux, sources, raw = record.unpack_from(body, offset)
            group = str(ip_address(raw))
            if kind in _JOINING or (kind in _SOURCES_ADDED and sources):
                self._member(source, group, "join", now)
            elif (kind in _LEAVING_IF_EMPTY and not sources) or kind in _BLOCKING:
                self._member(source, group, "leave", now)
            offset += record.size + sources * size + aux * 4

    def _member(self, host: str, group: str, action: str, now: float) -> None:
        address = ip_address(group)
        if not address.is_multicast:
            self._count("malformed")
            return
        if address in SOLICITED_NODE:
            self._count("solicited-node")  # every IPv6 host's neighbour discovery: noise here
            return
        hosts = self.members.get(group)
        if hosts is None:
            if len(self.members) >= MAX_GROUPS:
                self._count("overflow")
                return
            hosts = self.members[group] = {}
        # A report is repeated (robustness): news only when the host's state changes, or a
        # leave of a host that joined before we looked, said once.
        changed = (host not in hosts) if action == "join" else (host in hosts)
        if action == "join":
            if len(hosts) < MAX_MEMBERS:
                hosts[host] = now
        else:
            hosts.pop(host, None)
            unseen = self._left.get((host, group))
            changed = changed or unseen is None or now - unseen > MEMBER_TIMEOUT
            if len(self._left) < MAX_EVENTS or (host, group) in self._left:
                self._left[(host, group)] = now
        if changed:
            self._event(now, action, group=group, host=host)

    def _querier(self, family: int, source: str, protocol: str, now: float) -> None:
        known = self.queriers.get(family)
        self.queriers[family] = Querier(source, protocol, now)
        if known is None or known.address != source:
            self._event(now, "querier", host=source, protocol=protocol)

    def _event(self, now: float, kind: str, **fields: str) -> None:
        self._event_number += 1
        self.events.append({"n": self._event_number, "time": now, "event": kind, **fields})

    # --- the view ---------------------------------------------------------------------

    def snapshot(self, now: float, events_after: int = 0) -> dict[str, Any]:
        """Rows (busiest first) with rates since the last snapshot, members, the queriers,
        and the events numbered above ``events_after``."""
        seconds = None if self._shown_at is None else max(1e-6, now - self._shown_at)
        self._shown_at = now
        for hosts in self.members.values():
            for host in [h for h, heard in hosts.items() if now - heard > MEMBER_TIMEOUT]:
                del hosts[host]
        rows: list[dict[str, Any]] = []
        for (group, port), row in self.rows.items():
            packets, octets = row.packets - row.shown_packets, row.bytes - row.shown_bytes
            row.shown_packets, row.shown_bytes = row.packets, row.bytes
            loss = row.loss()
            rows.append(
                {
                    "group": format_endpoint(group, port),
                    "sources": sorted(row.sources),
                    "members": len(self.members.get(group, {})),
                    "kind": max(row.kinds, key=lambda k: row.kinds[k]) if row.kinds else "?",
                    "pps": None if seconds is None else round(packets / seconds, 1),
                    "mbps": None if seconds is None else round(octets * 8 / seconds / 1e6, 3),
                    "packets": row.packets,
                    "bytes": row.bytes,
                    "loss": None if loss is None else round(loss, 4),
                    "idle_s": round(now - row.last_seen, 1),
                }
            )
        seen = {key[0] for key in self.rows}
        for group, hosts in self.members.items():
            if group not in seen and hosts:  # joined, nothing sent to it here (yet)
                rows.append({"group": group, "sources": [], "members": len(hosts), "kind": "-"})
        rows.sort(key=lambda r: (-(r.get("pps") or 0), -r.get("packets", 0), r["group"]))
        return {
            "groups": rows,
            "queriers": {
                f"ipv{family}": {
                    "address": q.address,
                    "protocol": q.protocol,
                    "heard_s_ago": round(now - q.heard, 1),
                }
                for family, q in sorted(self.queriers.items())
            },
            "events": [e for e in self.events if e["n"] > events_after],
            "counters": dict(self.counters),
        }


def _identify(payload: bytes) -> tuple[str, int, int | None]:
    """What a datagram is, and its sender's stream and sequence number where it has one."""
    kind = kind_of(payload)
    if kind is DatagramKind.FRAME:
        frame = decode_frame_untrusted(payload)
        if isinstance(frame, str) or frame.flags & Flag.UNICAST:
            return "mcastkit", 0, None  # a unicast frame's seq is of another counter
        # The sender's id names its stream: a restarted node (a new incarnation) starts anew.
        return "mcastkit", frame.sender ^ frame.incarnation, frame.seq
    if kind is DatagramKind.BENCH and len(payload) >= BENCH_HEAD.size:
        return "bench", 0, BENCH_HEAD.unpack_from(payload)[1]
    if kind is DatagramKind.PING:
        probe = decode_probe(payload)
        if probe is None:
            return "ping", 0, None
        return "ping", probe.sender ^ (probe.kind << 1 | probe.path), probe.seq
    return kind.value, 0, None
