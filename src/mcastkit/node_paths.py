"""A Node's ways out: one unicast socket per interface (part of the asyncio runtime).

Each path sends the group's datagrams out of its interface, so a node on several interfaces
is heard on each; peers learn one unicast address per path and answer to it, so each path's
socket also takes unicast replies. A datagram for one peer leaves by the interface that peer
was last heard on: a reply goes back the way its request came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .addr import GroupSpec
from .errors import MulticastError
from .events import AddressChanged, Event, InterfaceDown, InterfaceEvent, InterfaceUp
from .ifwatch import POLL_INTERFACES, SETTLE, InterfaceTracker
from .peers import Address
from .reach import Reach
from .session import Session
from .transport import (
    GroupSocket,
    IfaceChoice,
    Interface,
    list_interfaces,
    open_receiver,
    open_sender,
    resolve_interfaces,
)
from .transport.batch import BatchReceiver, BatchSender, Destination
from .transport.handles import local_address
from .transport.netlink import LinkWatch, follow
from .transport.unicast import bind_unicast, open_unicast

__all__ = ["NodeWays", "Path", "Paths", "kernel_drops"]

log = logging.getLogger("mcastkit")
MAX_REMEMBERED = 4096  # peer hosts whose arrival interface is kept (oldest forgotten first)
Outgoing = tuple[bytes, Destination | None]


@dataclass
class Path:
    """One interface's sending socket, its batch sender and reader, and what waits for it."""

    interface: Interface
    socket: GroupSocket
    batch: BatchSender
    reader: BatchReceiver
    unsent: deque[Outgoing] = field(default_factory=deque)
    down: bool = False  # kept although its interface is down: the node's last way out

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.socket.fileno()

    def fan_out(self, out: list[tuple[bytes, Address | None]], reach: Reach) -> list[Outgoing]:
        """Send each run of ``out``'s group datagrams to every copy target of ``reach`` now,
        a whole run per GSO call (no per-copy bookkeeping); return what still goes out by
        the queue: ``out`` (without the group's datagrams when multicast is off) and any
        copies the socket did not take."""
        if not reach.active:
            return list(out)
        group = [data for data, to in out if to is None]
        rest: list[Outgoing] = [item for item in out if reach.multicast or item[1] is not None]
        for target in reach.targets if group else ():
            done = self.batch.send_nowait(group, target)
            rest.extend((data, target) for data in group[done:])
        return rest

    def address(self) -> Address:
        """Where this path hears unicast: its interface's address where the kernel bound the
        wildcard (at the first send), and the port."""
        host, port = local_address(self.socket)
        if host in ("0.0.0.0", "::"):
            v4, v6 = self.interface.ipv4_address, self.interface.ipv6
            ip = v4 if self.socket.spec.family == 4 else (v6[0].ip if v6 else None)
            host = host if ip is None else str(ip)
        return (str(host), int(port))


class Paths:
    """The paths of one node, by interface name, in the order they were opened."""

    def __init__(self, spec: GroupSpec, *, ttl: int, loopback: bool) -> None:
        self.spec, self.ttl, self.loopback = spec, ttl, loopback
        self.by_name: dict[str, Path] = {}
        self.arrived: dict[str, str] = {}  # peer host -> interface it was last heard on
        self._only: Path | None = None

    def __iter__(self) -> Iterator[Path]:
        return iter(list(self.by_name.values()))

    def __len__(self) -> int:
        return len(self.by_name)

    @property
    def first(self) -> Path:
        """The path opened first (the node's unicast address as a single-interface node)."""
        return next(iter(self.by_name.values()))

    @property
    def only(self) -> Path | None:
        """The one path when there is exactly one (the send hot path checks this)."""
        return self._only

    def _changed(self) -> None:
        self._only = next(iter(self.by_name.values())) if len(self.by_name) == 1 else None

    def open(self, interface: Interface, *, port: int = 0, multicast: bool = True) -> Path:
        """A path out of ``interface``; it replaces one of the same name (a new device or
        address). ``port``: listen for unicast there, on the interface's address, if no other
        socket has it (seeds name it; another node on this host keeps it, and this path takes
        any port). ``multicast`` False: a plain unicast socket. Raises what ``open_sender``
        raises."""
        if multicast:
            sock = open_sender(
                self.spec, iface=interface.index, ttl=self.ttl, loopback=self.loopback
            )
        else:
            sock = open_unicast(self.spec, interface)
        bind_unicast(sock, self.spec.family, interface, port)
        path = Path(
            interface,
            sock,
            BatchSender(sock),  # same-size runs leave in one GSO call
            BatchReceiver(sock, slots=8, watch_load=False),
        )
        self.close(interface.name)
        self.by_name[interface.name] = path
        self._changed()
        return path

    def close(self, name: str) -> Path | None:
        """Close the path of ``name`` (what it still had queued goes with it)."""
        path = self.by_name.pop(name, None)
        self._changed()
        if path is not None:
            with contextlib.suppress(OSError):
                path.socket.close()
        return path

    def close_all(self) -> None:
        """Close every path."""
        for name in list(self.by_name):
            self.close(name)

    def heard(self, host: str, iface: str) -> None:
        """Remember that ``host`` was heard on ``iface``."""
        arrived = self.arrived
        if arrived.get(host) == iface:
            return
        if host not in arrived and len(arrived) >= MAX_REMEMBERED:
            del arrived[next(iter(arrived))]
        arrived[host] = iface

    def for_peer(self, destination: Address) -> Path:
        """The path a datagram to ``destination`` leaves by: where that host was heard."""
        name = self.arrived.get(destination[0])
        path = self.by_name.get(name) if name is not None else None
        return path if path is not None and not path.down else self.first

    def pending(self) -> bool:
        """True while some path still has datagrams to send."""
        return any(path.unsent for path in self.by_name.values())

    def distribute(self, datagrams: Iterable[Outgoing]) -> None:
        """Queue the session's datagrams: the group's on every path, a peer's on its path."""
        if self._only is not None:
            self._only.unsent.extend(datagrams)
            return
        live = [path for path in self.by_name.values() if not path.down] or [self.first]
        for item in datagrams:
            if item[1] is None:
                for path in live:
                    path.unsent.append(item)
            else:
                host, port = item[1][0], item[1][1]
                self.for_peer((host, port)).unsent.append(item)


def open_ways(
    spec: GroupSpec,
    chosen: IfaceChoice,
    *,
    ttl: int,
    loopback: bool,
    rcvbuf: int,
    multicast: bool,
    port: int,
) -> tuple[GroupSocket | None, Paths, InterfaceTracker]:
    """A node's sockets: the group socket (joined on the ``chosen`` interfaces; None with
    ``multicast`` off, where nothing is joined and the interfaces need no MULTICAST flag),
    one path per interface (the first to get ``port`` listens there for unicast), and the
    tracker of the interfaces in use."""
    group_socket = None
    if multicast:
        group_socket = open_receiver(
            spec, iface=chosen, ttl=ttl, loopback=loopback, blocking=False, rcvbuf=rcvbuf
        )
        for warning in group_socket.warnings:
            log.info("%s", warning)  # a capped default buffer is normal without root
        if group_socket.fallback:
            log.warning("%s", group_socket.fallback)
        interfaces = group_socket.interfaces
    else:
        interfaces = resolve_interfaces(chosen, spec.family, require_multicast=False)
    paths = Paths(spec, ttl=ttl, loopback=loopback)
    try:
        for interface in interfaces:
            paths.open(interface, port=port, multicast=multicast)
    except BaseException:
        paths.close_all()
        if group_socket is not None:
            group_socket.close()
        raise
    tracker = InterfaceTracker.for_choice(spec.family, chosen, interfaces)
    for path in paths:
        path.down = path.interface.name not in tracker.in_use  # a stand-in
    return group_socket, paths, tracker


class NodeWays:
    """A Node's ways on its loop (owned by the Node): the group socket's reader and each
    path's, and the kernel's link and address notices followed: join on an interface that
    came up, leave one that went down, reopen a path whose address changed, and tell peers
    with a hello."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        group: GroupSocket | None,
        paths: Paths,
        tracker: InterfaceTracker,
        *,
        session: Callable[[], Session | None],
        on_readable: Callable[[BatchReceiver, str | None, bool], None],
        notify: Callable[[Event | None], None],
        pump: Callable[[], None],
    ) -> None:
        self.tracker = tracker
        self._loop = loop
        self._group = group
        self._paths = paths
        self._session = session  # the Node's, while it runs
        self._on_readable = on_readable  # a path's socket is readable
        self._notify = notify  # an interface event for the Node's listeners
        self._pump = pump  # the Node sends what is due and re-arms its timer
        self._watch: LinkWatch | None = None
        self._refresh: asyncio.TimerHandle | None = None

    def start(self, several: bool) -> None:
        """Read every way; with a group socket, follow the interfaces too. ``several``: the
        group is joined on several interfaces (each receive batch names its arrival)."""
        for path in self._paths:
            self._add_reader(path)
        group = self._group
        if group is None:
            return  # multicast off: the paths are fixed
        # Datagrams arrive in recvmmsg or GRO batches; on several interfaces each batch is
        # also one arrival interface.
        reader = BatchReceiver(group, slots=32, watch_load=False, arrival=several)
        label = None if several else group.interface.name
        self._loop.add_reader(group.fileno(), self._on_readable, reader, label, True)
        self._watch = LinkWatch()
        if self._watch.available:
            self._loop.add_reader(self._watch.fileno(), self._on_link_notice)
        else:
            self._refresh = self._loop.call_later(POLL_INTERFACES, self._refresh_interfaces)

    def stop(self) -> None:
        """Stop following and close every way."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if self._watch is not None:
            if self._watch.available:
                self._loop.remove_reader(self._watch.fileno())
            self._watch.close()
            self._watch = None
        for path in list(self._paths):
            self._drop_path(path)
        if self._group is not None:
            self._loop.remove_reader(self._group.fileno())
            self._group.close()

    def _add_reader(self, path: Path) -> None:
        name = path.interface.name
        self._loop.add_reader(path.fileno(), self._on_readable, path.reader, name, False)

    def _drop_path(self, path: Path) -> None:
        session = self._session()
        if path.unsent and session is not None:
            # Queued for an interface that went away: counted (the reliable layer repairs).
            session.counters["unsent-interface-gone"] += len(path.unsent)
        self._loop.remove_reader(path.fileno())
        self._loop.remove_writer(path.fileno())
        self._paths.close(path.interface.name)

    def _on_link_notice(self) -> None:
        assert self._watch is not None
        # Debounced: a DHCP renewal or a cable plug is a burst of notices; read once after.
        if self._watch.drain() and self._refresh is None:
            self._refresh = self._loop.call_later(SETTLE, self._refresh_interfaces)

    def _refresh_interfaces(self) -> None:
        self._refresh = None
        session = self._session()
        if session is None:
            return
        if self._watch is None or not self._watch.available:
            self._refresh = self._loop.call_later(POLL_INTERFACES, self._refresh_interfaces)
        try:
            events = self.tracker.update(list_interfaces())
        except OSError as exc:
            log.warning("cannot read the interfaces: %s", exc)
            return
        announce = False
        for event in events:
            announce |= self._apply(event, session)
            self._notify(event)
        if announce:
            session.announce(self._loop.time())
        self._pump()

    def _apply(self, event: InterfaceEvent, session: Session) -> bool:
        """Join, leave or reopen for one interface event; True when peers should hear a
        hello (a new path, or a new address on one)."""
        group, paths = self._group, self._paths
        assert group is not None
        if isinstance(event, InterfaceDown):
            follow(group, event, None)
            path = paths.by_name.get(event.name)
            if path is not None and len(paths) > 1:
                self._drop_path(path)
            elif path is not None:
                path.down = True  # the last way out stays, to be reopened when it is back
            session.forget_path(event.name)
            session.counters["interfaces-down"] += 1
            return False
        interface = self.tracker.in_use[event.name]
        try:
            follow(group, event, interface)
            old = paths.by_name.get(event.name)
            v6 = group.spec.family == 6
            same = (
                old is not None
                and old.interface.index == interface.index
                and (old.interface.ipv6 if v6 else old.interface.ipv4)
                == (interface.ipv6 if v6 else interface.ipv4)
            )
            if old is not None and same:
                old.down = False  # back as it was: the same socket, so peers' view holds
            else:
                if old is not None:
                    self._drop_path(old)
                new = paths.open(interface)
                self._add_reader(new)
        except (MulticastError, OSError) as exc:
            log.warning("cannot use interface %s: %s", event.name, exc)
            session.counters["interface-errors"] += 1
            return False
        for stale in [p for p in paths if p.down]:
            self._drop_path(stale)
        session.counters["interfaces-up" if isinstance(event, InterfaceUp) else "addresses"] += 1
        if isinstance(event, AddressChanged):
            log.info("interface %s now has %s", event.name, ", ".join(event.addresses))
        return True


def kernel_drops(group: GroupSocket | None, paths: Iterable[Path]) -> int:
    """Datagrams the kernel dropped for a full receive buffer on these sockets since they
    opened: loss before any protocol saw it."""
    sockets = [group] if group is not None else []
    sockets += [path.socket for path in paths]
    return sum(load.drops for sock in sockets if (load := sock.load()) is not None)
