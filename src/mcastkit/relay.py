"""A relay between sites, with no I/O: what it hears on its local group goes to the other
relays by unicast, and what they send it is sent again on its local group.

Each member datagram heard on the group leaves once to every relay this one knows (hop 1);
a relay never forwards what another relay sent it (split horizon: relays that know each other
form a full mesh) and ignores its own emissions coming back on the group (their source is one
of its proxies). So with one relay per site, every site gets each datagram exactly once,
whatever the number of sites. Datagrams are never told apart by content: a sender may repeat
the same bytes on purpose. Two relays on one site are a mistake the protocol bounds but does
not hide: each tells the other its site addresses, so neither forwards the other's
emissions (no loop) nor sends it anything (their site's subnet is one); the other sites get
each datagram twice (group members drop the second copy by their replay windows; raw
traffic sees it twice), never more.

A datagram from a remote member is sent on the local group from a *proxy*: a socket of the
runtime that stands for that member here, so unicast to it (a reply, a repair request, a
hello answer) comes back to the relay and goes to the member's relay, which delivers it from
a proxy that stands for the local member there. Members never know a relay is in between.

Relay datagrams (``RELAY_MAGIC``; sealed whole with the group key when there is one):
``"MKR1" | kind (1) | hop (1) | reserved (2) | relay id (8)`` then, by kind:
HELLO: the relays this one knows (count (2), endpoints), then the addresses its proxies send
from on its site (count (2), endpoints with port 0); GROUP: origin endpoint, datagram;
UNICAST: origin endpoint, destination endpoint, datagram. An endpoint is family (1: 4 or 6),
port (2), address (4 or 16). A relay that says hello is a relay (at most ``MAX_RELAYS``):
with a key, only one that holds it can; without, any host that reaches the relay port, so an
open relay belongs on a private network (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum

from .magics import RELAY_MAGIC
from .pacing import TokenBucket
from .peers import Address
from .security import KeyRing

__all__ = ["Emit", "RelayCore", "RelayKind", "decode_relay", "encode_relay"]

HEAD = struct.Struct("!4sBBHQ")
_ENDPOINT = struct.Struct("!BH")
_COUNT = struct.Struct("!H")
MAX_RELAYS = 64
MAX_PROXIES = 4096  # remote members stood for at once; more are dropped and counted
PROXY_IDLE = 120.0
HELLO_EVERY = 1.0
RELAY_TIMEOUT = 5.0  # a relay not heard for this long is not sent to (its hellos bring it back)


class RelayKind(IntEnum):
    """What a relay datagram carries."""

    HELLO = 1
    GROUP = 2
    UNICAST = 3


def _group_head(relay_id: int) -> bytes:
    """The first 16 bytes of a member datagram (GROUP, hop 1) from relay ``relay_id``."""
    return HEAD.pack(RELAY_MAGIC, RelayKind.GROUP, 1, 0, relay_id)


@dataclass(frozen=True)
class Emit:
    """An output of the core: ``datagrams`` to one destination (a run: one GSO call).
    ``via`` None: the relay socket; else the proxy standing for that (relay, origin) pair.
    ``to`` None: the local group."""

    datagrams: list[bytes]
    to: Address | None
    via: tuple[Address, Address] | None = None


def _endpoint(address: Address) -> bytes:
    ip = ipaddress.ip_address(address[0].split("%", 1)[0])
    return _ENDPOINT.pack(ip.version, address[1]) + ip.packed


def _read_endpoint(data: bytes, offset: int, any_port: bool = False) -> tuple[Address, int] | None:
    if offset + _ENDPOINT.size > len(data):
        return None
    family, port = _ENDPOINT.unpack_from(data, offset)
    size = {4: 4, 6: 16}.get(family)
    offset += _ENDPOINT.size
    if size is None or offset + size > len(data) or not (port or any_port):
        return None
    raw = data[offset : offset + size]
    ip = ipaddress.IPv4Address(raw) if family == 4 else ipaddress.IPv6Address(raw)
    return (str(ip), port), offset + size


def encode_relay(kind: RelayKind, relay_id: int, *parts: bytes, hop: int = 1) -> bytes:
    """A relay datagram (parts already encoded)."""
    return HEAD.pack(RELAY_MAGIC, kind, hop, 0, relay_id) + b"".join(parts)


def _read_list(data: bytes, offset: int, any_port: bool) -> tuple[list[Address], int] | None:
    """A count (2) and that many endpoints (at most ``MAX_RELAYS``)."""
    if offset + _COUNT.size > len(data):
        return None
    (count,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    if count > MAX_RELAYS:
        return None
    found: list[Address] = []
    for _ in range(count):
        read = _read_endpoint(data, offset, any_port)
        if read is None:
            return None
        address, offset = read
        found.append(address)
    return found, offset


def decode_hello_sites(rest: bytes) -> list[str] | None:
    """The site addresses at the end of a HELLO (``decode_relay``'s last item), or None."""
    read = _read_list(rest, 0, any_port=True)
    if read is None or read[1] != len(rest):
        return None
    return [host for host, _ in read[0]]


def decode_relay(
    data: bytes,
) -> tuple[RelayKind, int, int, list[Address], bytes] | None:
    """(kind, hop, relay id, endpoints, datagram) of a relay datagram, or None if it is
    malformed (never raises). HELLO: the endpoints are the relays it knows, and the last item
    its site addresses (``decode_hello_sites``)."""
    if len(data) < HEAD.size:
        return None
    magic, kind, hop, _, relay_id = HEAD.unpack_from(data)
    if magic != RELAY_MAGIC or kind not in (1, 2, 3) or not relay_id:
        return None
    offset = HEAD.size
    endpoints: list[Address] = []
    if kind == RelayKind.HELLO:
        read = _read_list(data, offset, any_port=False)
        if read is None:
            return None
        endpoints, offset = read
        if decode_hello_sites(data[offset:]) is None:
            return None
        return RelayKind.HELLO, hop, relay_id, endpoints, data[offset:]
    for _ in range(1 if kind == RelayKind.GROUP else 2):
        found = _read_endpoint(data, offset)
        if found is None:
            return None
        address, offset = found
        endpoints.append(address)
    return RelayKind(kind), hop, relay_id, endpoints, data[offset:]


@dataclass
class _Relay:
    added: float
    relay_id: int = 0
    last_heard: float = float("-inf")
    same_site: bool = False  # its site addresses are on our site's subnet: never forward to it


@dataclass
class RelayCore:
    """One relay: its id, the relays it knows and its proxies."""

    relay_id: int
    seeds: tuple[Address, ...]
    now: float
    keyring: KeyRing | None = None
    rate_bytes: float | None = None  # forwarding budget towards the other relays (None: no cap)
    counters: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.relays: dict[Address, _Relay] = {seed: _Relay(self.now) for seed in self.seeds}
        self.own_addresses: set[Address] = set()  # where our own hellos came back from
        # (relay, origin) -> last use: the runtime keeps a socket for each.
        self.proxies: OrderedDict[tuple[Address, Address], float] = OrderedDict()
        self.own_sources: set[Address] = set()  # our proxies' addresses: echoes to ignore
        # Our site addresses (the runtime sets them), told to the other relays; theirs: a
        # relay on our own site (a mistake) is then heard on our group, and never forwarded.
        self.site_addresses: list[str] = []
        self.site_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.foreign_sites: dict[str, Address] = {}
        self._bucket = (
            None
            if self.rate_bytes is None
            else TokenBucket(self.rate_bytes, max(self.rate_bytes / 10, 1 << 16), self.now)
        )
        self._next_hello = self.now
        # Per source: the GROUP header and origin endpoint every datagram of it starts with;
        # per endpoint bytes: the address (a run from one origin costs one parse). Bounded.
        self._prefixes: dict[Address, bytes] = {}
        self._origins: dict[bytes, Address] = {}

    # --- helpers ---------------------------------------------------------------------------

    def _seal(self, data: bytes) -> bytes:
        return data if self.keyring is None else self.keyring.seal(data)

    def live_relays(self, now: float) -> list[Address]:
        """The relays datagrams go to now: heard within ``RELAY_TIMEOUT``, on other sites."""
        return [
            a
            for a, r in self.relays.items()
            if now - r.last_heard <= RELAY_TIMEOUT and not r.same_site
        ]

    def _on_site(self, host: str) -> bool:
        """True for an address of this site: ours, or on our site's subnet (with no subnet
        known, as on loopback, any: the runtime did not say)."""
        if not self.site_addresses or host in self.site_addresses:
            return True
        ip = ipaddress.ip_address(host)
        return any(ip in network for network in self.site_networks)

    def _on_our_site(self, sites: list[str]) -> bool:
        for site in sites:
            ip = ipaddress.ip_address(site)
            if site not in self.site_addresses and any(ip in n for n in self.site_networks):
                return True
        return False

    def _proxy(self, relay: Address, origin: Address, now: float) -> tuple[Address, Address] | None:
        key = (relay, origin)
        if key not in self.proxies and len(self.proxies) >= MAX_PROXIES:
            self.counters["dropped:proxies-full"] += 1
            return None
        self.proxies[key] = now
        self.proxies.move_to_end(key)
        return key

    # --- inputs ----------------------------------------------------------------------------

    def from_group(self, data: bytes, source: Address, now: float) -> list[Emit]:
        """A datagram heard on the local group: to every live relay, once."""
        return self.group_run([data], source, now)

    def group_run(self, datagrams: list[bytes], source: Address, now: float) -> list[Emit]:
        """Datagrams heard on the local group from one source: each to every live relay,
        once (one run per relay)."""
        count = len(datagrams)
        self.counters["group-in"] += count
        if source in self.own_sources:
            self.counters["own-echo"] += count
            return []
        if source[0] in self.foreign_sites:
            # Another relay's emission on our site: forwarding it would loop between us.
            self.counters["dropped:relay-on-this-site"] += count
            return []
        relays = self.live_relays(now)
        if not relays:
            self.counters["no-relay"] += count
            return []
        prefix = self._prefixes.get(source)
        if prefix is None:
            if len(self._prefixes) >= MAX_PROXIES:
                self._prefixes.clear()
            prefix = self._prefixes[source] = encode_relay(
                RelayKind.GROUP, self.relay_id, _endpoint(source)
            )
        packets = [prefix + data for data in datagrams]
        if self.keyring is not None:
            packets = [self.keyring.seal(packet) for packet in packets]
        if self._bucket is not None:
            self._bucket.refill(now)
            if not self._bucket.spend(sum(map(len, packets)) * len(relays)):
                self.counters["dropped:rate-limited"] += count
                return []
        self.counters["forwarded"] += count * len(relays)
        return [Emit(packets, relay) for relay in relays]

    def relay_run(self, datagrams: list[bytes], source: Address, now: float) -> list[Emit]:
        """Datagrams from one relay: a member datagram of a known relay (the common case)
        is taken without a full decode, one proxy lookup per origin in the run; anything
        else goes through ``from_relay``."""
        if self.keyring is not None:
            opened: list[bytes] = []
            for data in datagrams:
                plain = self.keyring.open_untrusted(data)
                if isinstance(plain, str):
                    self.counters["relay-in"] += 1
                    self.counters[f"dropped:{plain}"] += 1
                else:
                    opened.append(plain)
            datagrams = opened
        known = self.relays.get(source)
        out: list[Emit] = []
        runs: dict[Address, list[bytes]] = {}
        origins = self._origins
        # A member datagram of this relay starts with these 16 bytes (reserved bytes 0).
        expected = b"" if known is None or known.same_site else _group_head(known.relay_id)
        at = HEAD.size
        for data in datagrams:
            family = data[at] if len(data) > at else 0
            end = at + _ENDPOINT.size + (4 if family == 4 else 16)
            if expected and family in (4, 6) and len(data) >= end and data.startswith(expected):
                raw = data[at:end]
                origin = origins.get(raw)
                if origin is None:
                    parsed = _read_endpoint(data, HEAD.size)
                    if parsed is not None:
                        if len(origins) >= MAX_PROXIES:
                            origins.clear()
                        origin = origins[raw] = parsed[0]
                if origin is not None:
                    runs.setdefault(origin, []).append(data[end:])
                    continue
            out.extend(self._from_relay_opened(data, source, now))
        if runs:
            known_relay = known
            assert known_relay is not None
            known_relay.last_heard = now
            taken = sum(len(run) for run in runs.values())
            self.counters["relay-in"] += taken
            for origin, run in runs.items():
                proxy = self._proxy(source, origin, now)
                if proxy is not None:
                    self.counters["emitted"] += len(run)
                    out.append(Emit(run, None, proxy))
        return out

    def from_proxy(self, key: tuple[Address, Address], data: bytes, source: Address,
                   now: float) -> list[Emit]:  # fmt: skip
        """Unicast from a local member to the proxy of ``key``: to that member's relay."""
        relay, origin = key
        if key not in self.proxies:
            return []
        self.proxies[key] = now
        self.counters["unicast-out"] += 1
        packet = encode_relay(
            RelayKind.UNICAST, self.relay_id, _endpoint(source), _endpoint(origin), data
        )
        return [Emit([self._seal(packet)], relay)]

    def from_relay(self, data: bytes, source: Address, now: float) -> list[Emit]:
        """A datagram on the relay socket (hostile input: dropped and counted, never raised)."""
        if self.keyring is not None:
            opened = self.keyring.open_untrusted(data)
            if isinstance(opened, str):
                self.counters["relay-in"] += 1
                self.counters[f"dropped:{opened}"] += 1
                return []
            data = opened
        return self._from_relay_opened(data, source, now)

    def _from_relay_opened(self, data: bytes, source: Address, now: float) -> list[Emit]:
        self.counters["relay-in"] += 1
        decoded = decode_relay(data)
        if decoded is None:
            self.counters["dropped:malformed"] += 1
            return []
        kind, hop, relay_id, endpoints, datagram = decoded
        if relay_id == self.relay_id:
            # Our own, sent to an address of ours another relay listed: never there again.
            self.counters["own"] += 1
            self.own_addresses.add(source)
            self.relays.pop(source, None)
            return []
        known = self.relays.get(source)
        if known is None and kind != RelayKind.HELLO:
            self.counters["dropped:unknown-relay"] += 1  # data only from relays that said hello
            return []
        if known is None:
            if len(self.relays) >= MAX_RELAYS:
                self.counters["dropped:relays-full"] += 1
                return []
            known = self.relays[source] = _Relay(now)
        known.relay_id, known.last_heard = relay_id, now
        if kind == RelayKind.HELLO:
            sites = decode_hello_sites(datagram) or []
            known.same_site = self._on_our_site(sites)
            for site in sites:
                if site not in self.site_addresses and len(self.foreign_sites) < 4 * MAX_RELAYS:
                    self.foreign_sites[site] = source
            for address in endpoints:  # relays it knows: a full mesh from any --peer list
                new = address not in self.relays and address not in self.own_addresses
                if new and len(self.relays) < MAX_RELAYS:
                    self.relays[address] = _Relay(now)
            return []
        if hop != 1:
            self.counters["dropped:hops"] += 1
            return []
        if known.same_site:
            self.counters["dropped:same-site"] += 1  # its site is ours: members heard it there
            return []
        if kind == RelayKind.GROUP:
            proxy = self._proxy(source, endpoints[0], now)
            if proxy is None:
                return []
            self.counters["emitted"] += 1
            return [Emit([datagram], None, proxy)]
        origin, destination = endpoints
        if not self._on_site(destination[0]):
            # Only to members of this site: a relay is no way to send anywhere else.
            self.counters["dropped:not-on-site"] += 1
            return []
        proxy = self._proxy(source, origin, now)
        if proxy is None:
            return []
        self.counters["unicast-in"] += 1
        return [Emit([datagram], destination, proxy)]

    def tick(self, now: float) -> list[Emit]:
        """Hellos to every relay (seeds too: they may start later); learned relays gone for
        good are forgotten."""
        out: list[Emit] = []
        if now >= self._next_hello:
            self._next_hello = now + HELLO_EVERY
            known = [_endpoint(a) for a in list(self.relays)[:MAX_RELAYS]]
            sites = [_endpoint((a, 0)) for a in self.site_addresses[:MAX_RELAYS]]
            hello = self._seal(
                encode_relay(
                    RelayKind.HELLO,
                    self.relay_id,
                    _COUNT.pack(len(known)),
                    *known,
                    _COUNT.pack(len(sites)),
                    *sites,
                )
            )
            out = [Emit([hello], relay) for relay in self.relays]
            for address, relay in list(self.relays.items()):
                heard = max(relay.last_heard, relay.added)
                if address not in self.seeds and now - heard > 60 * RELAY_TIMEOUT:
                    del self.relays[address]  # learned, then gone for good
        return out

    def next_timer(self) -> float:
        """When ``tick`` must run next."""
        return self._next_hello

    def idle_proxies(self, now: float) -> list[tuple[Address, Address]]:
        """Proxies not used for ``PROXY_IDLE``: forgotten here, for the runtime to close."""
        idle = []
        while self.proxies:
            key, used = next(iter(self.proxies.items()))
            if now - used < PROXY_IDLE:
                break
            del self.proxies[key]
            idle.append(key)
        return idle
