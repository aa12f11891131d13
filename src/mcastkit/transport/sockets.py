"""Group sockets: the one module that calls setsockopt, with every OS quirk in one place.

Linux is tested. The macOS/BSD and Windows branches follow their documentation (netinet/in.h,
ip(4), Winsock "Multicast Programming") and are marked where they differ; they are not tested.

Choices, and why:
- Joins use the protocol-independent RFC 3678 API (MCAST_JOIN_GROUP, MCAST_JOIN_SOURCE_GROUP,
  MCAST_BLOCK_SOURCE) with an interface *index*, so IPv4 and IPv6, any-source and
  source-specific joins take one code path, and an interface without an IPv4 address works.
- Receivers bind the group address on Linux/macOS (the kernel then filters by destination) and
  set IP_MULTICAST_ALL=0 on Linux, so a socket sees only the groups it joined itself, not
  every group any socket on the host joined on that port. Windows cannot bind a group address:
  it binds the wildcard.
- SO_REUSEADDR (plus SO_REUSEPORT on macOS/BSD) lets many receivers share a port on one host;
  every one of them gets a copy of each multicast datagram.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import select
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..addr import (
    GroupSpec,
    IPAddress,
    parse_address,
    parse_group,
    parse_port,
    split_host_port,
)
from ..errors import AddressError, InterfaceError, SocketSetupError
from .ancillary import (
    CMSG_BUFSIZE,
    IP_MULTICAST_ALL,
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_MULTICAST_ALL,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    SO_RCVBUFFORCE,
    SO_RXQ_OVFL,
    Packet,
    QueueLoad,
    parse_ancillary,
    queue_load,
)
from .handles import SocketLike, os_socket, set_unicast_ttl, setup_error
from .interfaces import IfaceChoice, Interface, choose_interfaces, is_multi, scoped
from .joinreq import (
    BSD_LIKE,
    LINUX,
    MCAST_BLOCK_SOURCE,
    MCAST_JOIN_GROUP,
    MCAST_JOIN_SOURCE_GROUP,
    MCAST_LEAVE_GROUP,
    MCAST_LEAVE_SOURCE_GROUP,
    WINDOWS,
    _group_req,
    _group_source_req,
    ip_mreqn,
)
from .platform import CAPS

__all__ = [
    "GroupSocket",
    "Packet",
    "enable_packet_info",
    "open_receiver",
    "open_sender",
    "open_senders",
    "set_unicast_ttl",
]


def _level(family: int) -> int:
    return socket.IPPROTO_IP if family == 4 else socket.IPPROTO_IPV6


def _join_hint(exc: OSError, family: int, interface: Interface) -> str:
    if exc.errno == errno.ENOBUFS:
        knob = "net.ipv4.igmp_max_memberships" if family == 4 else "net.ipv6.mld_max_memberships"
        return f"this host hit its group limit; raise it: sysctl -w {knob}=1024"
    if exc.errno == errno.ENODEV:
        return f"interface {interface.name} is gone or cannot do multicast (see `mcast ifaces`)"
    if exc.errno == errno.EADDRINUSE:
        return "this socket already joined that group on that interface"
    if exc.errno == errno.EINVAL:
        return "the kernel rejected the group/source pair (is the source a unicast address?)"
    return ""


def _source_list(
    sources: Iterable[str | IPAddress], family: int, what: str
) -> tuple[IPAddress, ...]:
    parsed: list[IPAddress] = []
    for source in sources:
        address = parse_address(source) if isinstance(source, str) else source
        if address.version != family:
            raise AddressError(
                f"{what} {address} is IPv{address.version}; the group is IPv{family}"
            )
        if address.is_multicast or address.is_unspecified:
            raise AddressError(f"{what} {address} must be a unicast address of a sending host")
        parsed.append(address)
    return tuple(parsed)


@dataclass
class GroupSocket:
    """A UDP socket bound for one group (or broadcast), joined on one or more interfaces.

    ``send`` goes to the group; ``recv`` waits at most ``timeout`` seconds and returns None
    when nothing came, so callers never block forever without noticing.
    """

    sock: socket.socket
    spec: GroupSpec
    interface: Interface
    sources: tuple[IPAddress, ...] = ()
    excluded: tuple[IPAddress, ...] = ()
    joined: bool = False
    rcvbuf: int | None = None
    warnings: list[str] = field(default_factory=list)
    # Set when no interface was given and no route leads to the group, so loopback was
    # chosen: only this host will hear it. Callers show it; it is never silent.
    fallback: str | None = None
    # Every interface the group is joined on; ``interface`` is the first (it also sends).
    interfaces: list[Interface] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.interfaces:
            self.interfaces = [self.interface]

    @property
    def group(self) -> IPAddress:
        """The group (or broadcast) address."""
        return self.spec.group

    @property
    def port(self) -> int:
        """The UDP port."""
        return self.spec.port

    @functools.cached_property
    def destination(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address tuple ``sendto`` wants for the group (computed once: hot path)."""
        if self.spec.group.version == 4:
            return (str(self.spec.group), self.spec.port)
        scope = self.interface.index if _needs_scope(self.spec.group) else 0
        return (str(self.spec.group), self.spec.port, 0, scope)

    def fileno(self) -> int:
        """The socket's descriptor (for select/asyncio)."""
        return self.sock.fileno()

    def send(self, data: bytes, destination: tuple[str, int] | None = None) -> int:
        """Send one datagram to the group (or to ``destination``)."""
        return self.sock.sendto(data, scoped(destination) if destination else self.destination)

    def recv(self, timeout: float | None = None, bufsize: int = 65535) -> Packet | None:
        """Receive one datagram; None when ``timeout`` seconds pass first."""
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return None
        try:
            return self._recv(bufsize)
        except BlockingIOError:
            return None

    def _recv(self, bufsize: int) -> Packet:
        if not CAPS.pktinfo:
            data, address = self.sock.recvfrom(bufsize)
            return Packet(data, str(address[0]), int(address[1]))
        data, ancillary, _flags, address = self.sock.recvmsg(bufsize, CMSG_BUFSIZE)
        return parse_ancillary(data, address, ancillary)

    def load(self) -> QueueLoad | None:
        """The receive queue's drops (since the socket opened) and fill, or None."""
        return queue_load(self.sock)

    def grow_rcvbuf(self, size: int) -> int:
        """Ask for a receive buffer of ``size`` bytes (beyond rmem_max as root); the grant."""
        self.rcvbuf = _set_rcvbuf(self.sock, size)
        return self.rcvbuf

    def recv_nowait(self, bufsize: int = 65535) -> Packet | None:
        """Receive one datagram if one is queued (socket must be non-blocking)."""
        try:
            return self._recv(bufsize)
        except (BlockingIOError, InterruptedError):
            return None

    def leave(self) -> None:
        """Leave the group (also done by close, and by the kernel when the socket closes)."""
        if not self.joined:
            return
        try:
            for interface in self.interfaces:
                self._leave_on(interface)
        finally:
            self.joined = False

    def _leave_on(self, interface: Interface) -> None:
        family = self.spec.family
        try:
            if self.sources:
                for source in self.sources:
                    req = _group_source_req(interface.index, self.spec.group, source)
                    self.sock.setsockopt(_level(family), MCAST_LEAVE_SOURCE_GROUP, req)
            else:
                req = _group_req(interface.index, self.spec.group)
                self.sock.setsockopt(_level(family), MCAST_LEAVE_GROUP, req)
        except OSError as exc:
            raise setup_error(f"leaving {self.spec.group} on {interface.name}", exc) from exc

    def join_interface(self, interface: Interface) -> bool:
        """Join the group on one more interface (one that came up); False when it already
        was: then join again, as a returning carrier sends no report and a snooping switch
        waits for its next query (125 s). A refused join raises SocketSetupError."""
        known = next((i for i in self.interfaces if i.name == interface.name), None)
        if known is not None:
            if known.index == interface.index:
                with contextlib.suppress(SocketSetupError):
                    self._leave_on(known)
                _join_on(self, interface)  # a fresh report, repeated by the kernel
                return False
            self.leave_interface(known)  # the same name, a new device: join the new one
        _join_on(self, interface)
        self.interfaces.append(interface)
        self.joined = True
        return True

    def leave_interface(self, interface: Interface) -> bool:
        """Leave the group on one interface (one that went down or away); never raises: a
        vanished device has taken the membership with it. False when not joined there."""
        known = next((i for i in self.interfaces if i.name == interface.name), None)
        if known is None:
            return False
        self.interfaces.remove(known)
        with contextlib.suppress(OSError):
            self._leave_on(known)
        return True

    def close(self) -> None:
        """Leave and close."""
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            self.leave()
        self.sock.close()

    def __enter__(self) -> GroupSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _needs_scope(group: IPAddress) -> bool:
    return group.version == 6 and (group.packed[1] & 0x0F) in (0x1, 0x2)


def _as_spec(group: GroupSpec | str, allow_broadcast: bool) -> GroupSpec:
    if isinstance(group, GroupSpec):
        return group
    return parse_group(group, allow_broadcast=allow_broadcast)


def _spec_and_interface(
    group: GroupSpec | str, iface: IfaceChoice, broadcast: bool
) -> tuple[GroupSpec, Interface, str | None]:
    """Parse the group and pick one interface (``iface`` wins over ``%iface`` in the spec)."""
    spec = _as_spec(group, allow_broadcast=broadcast)
    interfaces, fallback = choose_interfaces(spec, iface, single=True)
    return spec, interfaces[0], fallback


def _spec_and_interfaces(
    group: GroupSpec | str, iface: IfaceChoice, broadcast: bool
) -> tuple[GroupSpec, list[Interface], str | None]:
    spec = _as_spec(group, allow_broadcast=broadcast)
    interfaces, fallback = choose_interfaces(spec, iface)
    return spec, interfaces, fallback


def new_socket(family: int) -> socket.socket:
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    sock = socket.socket(af, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    if family == 6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def _set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; return what the kernel granted."""
    if CAPS.rcvbuf_force:
        with contextlib.suppress(OSError):  # root may exceed net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
            granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            return granted
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def configure_sending(
    sock: socket.socket, family: int, interface: Interface, *, ttl: int, loopback: bool
) -> None:
    """Outgoing interface, TTL / hop limit and loopback for multicast sent on ``sock``."""
    if not 0 <= ttl <= 255:
        raise AddressError(f"TTL {ttl} is out of range; expected 0-255")
    try:
        if family == 4:
            if CAPS.mreqn:
                # struct ip_mreqn: the index picks the interface; the address fixes the source
                # (on lo the kernel would otherwise pick 0.0.0.0, 127/8 being host-scoped).
                value = ip_mreqn(None, interface.ipv4_address, interface.index)
            else:
                address = interface.ipv4_address
                if address is None:
                    raise InterfaceError(
                        f"interface {interface.name} has no IPv4 address to send from"
                    )
                value = address.packed
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, value)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loopback))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface.index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
    except OSError as exc:
        raise setup_error(f"setting the sending interface {interface.name}", exc) from exc


def _bind_receiver(
    sock: socket.socket, spec: GroupSpec, interface: Interface, *, several: bool = False
) -> list[str]:
    warnings: list[str] = []
    if spec.group.version == 4:
        host = "" if WINDOWS or spec.broadcast else str(spec.group)
        address: tuple[str, int] | tuple[str, int, int, int] = (host, spec.port)
    else:
        # A link-scope group bound with its scope ties the socket to that one device: joined
        # on several, the socket binds the wildcard (IPV6_MULTICAST_ALL=0 still filters).
        host = "::" if WINDOWS or (several and _needs_scope(spec.group)) else str(spec.group)
        scope = interface.index if _needs_scope(spec.group) and not several else 0
        address = (host, spec.port, 0, scope)
    try:
        sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL and host not in ("", "::"):
            # Some stacks refuse a group address in bind: fall back to the wildcard.
            wildcard = ("", spec.port) if spec.group.version == 4 else ("::", spec.port, 0, 0)
            try:
                sock.bind(wildcard)
            except OSError as exc2:
                raise _bind_error(spec, exc2) from exc2
            warnings.append("bound the wildcard address: other groups on this port may arrive")
        else:
            raise _bind_error(spec, exc) from exc
    return warnings


def _bind_error(spec: GroupSpec, exc: OSError) -> SocketSetupError:
    hint = ""
    if exc.errno == errno.EADDRINUSE:
        hint = (
            f"another program holds UDP port {spec.port} without SO_REUSEADDR; "
            f"find it with: ss -ulpn 'sport = :{spec.port}'"
        )
    elif exc.errno == errno.EACCES:
        hint = f"ports below 1024 need root; pick a port such as {spec.port + 5000}"
    return setup_error(f"binding UDP port {spec.port}", exc, hint=hint)


def enable_packet_info(handle: SocketLike, family: int) -> None:
    """Ask for destination, interface, TTL and the kernel's drop count with each datagram.

    Linux only (a no-op elsewhere).
    """
    if not CAPS.pktinfo:
        return
    sock = os_socket(handle)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    with contextlib.suppress(OSError):
        if family == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)


def open_receiver(
    group: GroupSpec | str,
    *,
    iface: IfaceChoice = None,
    sources: Iterable[str | IPAddress] = (),
    exclude: Iterable[str | IPAddress] = (),
    reuse: bool = True,
    rcvbuf: int | None = None,
    ttl: int = 1,
    loopback: bool = True,
    blocking: bool = True,
    broadcast: bool = False,
) -> GroupSocket:
    """Open a socket that receives ``group`` (``"239.1.2.3:5000%eth0"`` or a GroupSpec).

    ``sources`` makes a source-specific join (SSM, IGMPv3/MLDv2): only those senders arrive.
    ``exclude`` joins any-source but blocks the listed senders. The socket can also send to the
    group with the given ``ttl`` and ``loopback``. With ``broadcast`` (or a GroupSpec parsed
    with ``allow_broadcast``) an IPv4 broadcast address opens a broadcast receiver (no join).
    ``iface`` may name several interfaces ("all", "eth0,eth1" or a list): the socket joins on
    each, sends out of the first, and ``Packet.iface`` tells where a datagram arrived.
    """
    spec, interfaces, fallback = _spec_and_interfaces(group, iface, broadcast)
    interface = interfaces[0]
    family = spec.family
    source_list = _source_list(sources, family, "source")
    excluded = _source_list(exclude, family, "excluded source")
    if source_list and excluded:
        raise AddressError("give either sources (include mode) or exclude, not both")
    sock = new_socket(family)
    try:
        result = GroupSocket(
            sock, spec, interface, source_list, excluded, fallback=fallback, interfaces=interfaces
        )
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if BSD_LIKE and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if rcvbuf:
            result.rcvbuf = _set_rcvbuf(sock, rcvbuf)
            if result.rcvbuf < rcvbuf:
                result.warnings.append(
                    f"receive buffer is {result.rcvbuf} bytes, not {rcvbuf}: "
                    "raise net.core.rmem_max"
                )
        enable_packet_info(sock, family)
        if spec.broadcast:
            _bind_broadcast(sock, spec, interface)
        else:
            if CAPS.multicast_all:
                option = IP_MULTICAST_ALL if family == 4 else IPV6_MULTICAST_ALL
                with contextlib.suppress(OSError):  # IPV6_MULTICAST_ALL needs Linux 4.20+
                    sock.setsockopt(_level(family), option, 0)
            several = is_multi(iface if iface is not None else spec.iface)
            result.warnings.extend(_bind_receiver(sock, spec, interface, several=several))
            configure_sending(sock, family, interface, ttl=ttl, loopback=loopback)
            _join(result)
        sock.setblocking(blocking)
    except BaseException:
        sock.close()
        raise
    return result


def _join(target: GroupSocket) -> None:
    for interface in target.interfaces:
        _join_on(target, interface)


def _join_on(target: GroupSocket, interface: Interface) -> None:
    family = target.spec.family
    level = _level(family)
    index = interface.index
    where = f"{target.spec.group} on {interface.name}"
    try:
        if target.sources:
            for source in target.sources:
                req = _group_source_req(index, target.spec.group, source)
                target.sock.setsockopt(level, MCAST_JOIN_SOURCE_GROUP, req)
        else:
            target.sock.setsockopt(level, MCAST_JOIN_GROUP, _group_req(index, target.spec.group))
        target.joined = True
        for blocked in target.excluded:
            req = _group_source_req(index, target.spec.group, blocked)
            target.sock.setsockopt(level, MCAST_BLOCK_SOURCE, req)
    except OSError as exc:
        hint = _join_hint(exc, family, interface)
        raise setup_error(f"joining {where}", exc, hint=hint) from exc


def _bind_broadcast(sock: socket.socket, spec: GroupSpec, interface: Interface) -> None:
    if spec.family != 4:
        raise AddressError("IPv6 has no broadcast; use a multicast group such as ff02::1")
    _bind_to_device(sock, interface)
    try:
        sock.bind(("", spec.port))
    except OSError as exc:
        raise _bind_error(spec, exc) from exc


def _bind_to_device(sock: socket.socket, interface: Interface) -> bool:
    """Tie the socket to one interface (Linux, needs CAP_NET_RAW); False when not possible."""
    if not LINUX:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.name.encode())
    except (OSError, AttributeError):
        return False
    return True


def open_sender(
    group: GroupSpec | str,
    *,
    iface: IfaceChoice = None,
    ttl: int = 1,
    loopback: bool = True,
    source: str | None = None,
    sndbuf: int | None = None,
    broadcast: bool = False,
) -> GroupSocket:
    """Open a socket that sends to ``group`` out of one interface.

    ``source`` binds a local address (and optional ``:port``) so receivers doing a
    source-specific join can pick this sender. With ``broadcast`` an IPv4 broadcast address
    is accepted and SO_BROADCAST turned on.
    """
    spec, interface, fallback = _spec_and_interface(group, iface, broadcast)
    family = spec.family
    sock = new_socket(family)
    try:
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if spec.broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            set_unicast_ttl(sock, family, ttl)  # broadcast is not multicast: IP_TTL applies
            if not _bind_to_device(sock, interface) and interface.ipv4_address:
                source = source or str(interface.ipv4_address)
        else:
            configure_sending(sock, family, interface, ttl=ttl, loopback=loopback)
        if source:
            _bind_source(sock, source, family, interface)
    except BaseException:
        sock.close()
        raise
    return GroupSocket(sock, spec, interface, fallback=fallback)


def open_senders(
    group: GroupSpec | str, *, iface: IfaceChoice = "all", ttl: int = 1, loopback: bool = True
) -> list[GroupSocket]:
    """One sending socket per interface ``iface`` names ("all", "eth0,eth1", a list, or
    one): a datagram sent on each leaves once out of every interface."""
    spec, interfaces, _ = _spec_and_interfaces(group, iface, False)
    senders: list[GroupSocket] = []
    try:
        for interface in interfaces:
            senders.append(open_sender(spec, iface=interface.index, ttl=ttl, loopback=loopback))
    except BaseException:
        for sender in senders:
            sender.close()
        raise
    return senders


def _bind_source(sock: socket.socket, source: str, family: int, interface: Interface) -> None:
    host, port_text = split_host_port(source)
    address = parse_address(host.split("%", 1)[0])
    if address.version != family:
        raise AddressError(f"source {address} is IPv{address.version}; the group is IPv{family}")
    port = 0 if port_text in ("", "0") else parse_port(port_text)  # 0: any free port
    if address.is_link_local and family == 6 and "%" not in host:
        host = f"{address}%{interface.index}"  # a link-local address is one link's: ours
    try:
        sock.bind(scoped((host, port)) if family == 6 else (str(address), port))
    except OSError as exc:
        hint = "it must be an address of this host (see `mcast ifaces`)"
        if exc.errno == errno.EADDRINUSE:
            hint = "that source port is in use"
        raise setup_error(f"binding source {source}", exc, hint=hint) from exc
