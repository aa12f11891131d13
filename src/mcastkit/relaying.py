"""The relay's runtime: the local group, the relay socket and one proxy socket per remote
member, on the one blocking driver (the protocol is ``relay.RelayCore``)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .addr import GroupSpec
from .errors import SocketSetupError
from .peers import Address, random_id
from .relay import Emit, RelayCore
from .security import GroupKey, KeyRing
from .transport import GroupSocket, IfaceChoice, open_receiver, open_sender
from .transport.batch import BatchReceiver, BatchSender
from .transport.driver import STOP, Driver
from .transport.handles import local_address, nonblocking, set_receive_buffer
from .transport.platform import default_cipher
from .transport.sockets import new_socket
from .transport.unicast import bind_unicast, resolve_peers

__all__ = ["DEFAULT_RELAY_PORT", "RelayOptions", "run_relay"]

DEFAULT_RELAY_PORT = 5070
READ_BATCH = 256


@dataclass
class RelayOptions:
    """What ``mcast relay`` is told."""

    group: GroupSpec
    peers: tuple[str, ...] = ()  # other relays, HOST[:PORT] (PORT: ``port``)
    iface: IfaceChoice = None
    port: int = DEFAULT_RELAY_PORT  # where this relay hears the others
    listen: str = ""  # the address it binds for them (default: every address)
    ttl: int = 1
    key: GroupKey | None = None
    rate_bytes: float | None = None
    duration: float | None = None
    stats_every: float | None = None  # call ``on_stats`` this often (None: never)


@dataclass
class _Proxy:
    socket: GroupSocket
    sender: BatchSender
    reader: BatchReceiver


@dataclass
class Relay:
    """A running relay: its core, sockets and the counters of its sockets."""

    options: RelayOptions
    core: RelayCore
    group: GroupSocket
    link: socket.socket
    proxies: dict[tuple[Address, Address], _Proxy] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def stats(self) -> dict[str, Any]:
        """Counters and state, as plain data (``--json``)."""
        core = self.core
        now = time.monotonic()
        return {
            "relay": f"{core.relay_id:016x}",
            "group": str(self.options.group),
            "seconds": round(now - self.started, 3),
            "relays": sorted(f"{a[0]}:{a[1]}" for a in core.live_relays(now)),
            "proxies": len(self.proxies),
            "counters": dict(sorted(core.counters.items())),
        }


def _open_link(options: RelayOptions) -> socket.socket:
    family = options.group.family
    sock = new_socket(family)
    try:
        sock.bind(
            (options.listen, options.port) if family == 4 else (options.listen, options.port, 0, 0)
        )
    except OSError as exc:
        sock.close()
        raise SocketSetupError(
            f"binding relay port {options.port} ({exc.strerror}): another relay on this host? "
            "give --port"
        ) from None
    nonblocking(sock)
    set_receive_buffer(sock, 4 << 20)
    return sock


def run_relay(
    options: RelayOptions,
    *,
    stop: Callable[[], bool] = lambda: False,
    on_stats: Callable[[dict[str, Any]], None] | None = None,
) -> Relay:
    """Relay until ``stop()`` or ``options.duration``; returns the relay (its ``stats``)."""
    spec = options.group
    seeds = resolve_peers(options.peers, spec.family, DEFAULT_RELAY_PORT)
    group = open_receiver(spec, iface=options.iface, blocking=False, rcvbuf=8 << 20)
    try:
        link = _open_link(options)
    except BaseException:
        group.close()
        raise
    own = {(host, port) for host, port in seeds if port == options.port and _is_ours(host)}
    keyring = (
        None if options.key is None else KeyRing([options.key], os.urandom, cipher=default_cipher())
    )
    core = RelayCore(
        relay_id=random_id(os.urandom),
        seeds=tuple(s for s in seeds if s not in own),
        now=time.monotonic(),
        keyring=keyring,
        rate_bytes=options.rate_bytes,
    )
    interface = group.interface
    addresses = interface.ipv4 if spec.family == 4 else interface.ipv6
    core.site_addresses = [str(a.ip) for a in addresses]
    core.site_networks = [a.network for a in addresses if not a.ip.is_loopback]
    relay = Relay(options, core, group, link)
    link_out = BatchSender(link)
    driver = Driver()
    destination = group.destination

    def send_all(emits: list[Emit]) -> None:
        for emit in emits:
            if emit.via is None:
                assert emit.to is not None
                link_out.send(emit.datagrams, emit.to)  # runs of one size: one GSO call
                continue
            proxy = relay.proxies.get(emit.via) or _open_proxy(emit.via)
            if proxy is not None:
                proxy.sender.send(emit.datagrams, destination if emit.to is None else emit.to)

    def _open_proxy(key: tuple[Address, Address]) -> _Proxy | None:
        interface = group.interface
        try:
            sock = open_sender(spec, iface=interface.index, ttl=options.ttl, loopback=True)
        except OSError:
            core.counters["proxy-errors"] += 1
            return None
        bind_unicast(sock, spec.family, interface, 0)  # any port of the site address
        if local_address(sock)[1] == 0:  # the interface has no address to stand on
            sock.close()
            core.counters["proxy-errors"] += 1
            return None
        proxy = _Proxy(sock, BatchSender(sock), BatchReceiver(sock, slots=8, watch_load=False))
        relay.proxies[key] = proxy
        core.own_sources.add(local_address(sock))

        def from_member(
            buffer: memoryview, spans: list[tuple[int, int]], source: Any, _: Any
        ) -> None:
            now = time.monotonic()
            out: list[Emit] = []
            for begin, end in spans:
                out.extend(core.from_proxy(key, bytes(buffer[begin:end]), source, now))
            send_all(out)

        driver.read_runs(proxy.reader, from_member, READ_BATCH)
        return proxy

    def from_group(buffer: memoryview, spans: list[tuple[int, int]], source: Any, _: Any) -> None:
        datagrams = [bytes(buffer[begin:end]) for begin, end in spans]
        send_all(core.group_run(datagrams, (source[0], source[1]), time.monotonic()))

    def from_relay(buffer: memoryview, spans: list[tuple[int, int]], source: Any, _: Any) -> None:
        datagrams = [bytes(buffer[begin:end]) for begin, end in spans]
        send_all(core.relay_run(datagrams, (source[0], source[1]), time.monotonic()))

    end = None if options.duration is None else relay.started + options.duration
    next_stats = None if options.stats_every is None else relay.started + options.stats_every

    def turn(now: float) -> float | None:
        nonlocal next_stats
        if stop() or (end is not None and now >= end):
            return STOP
        send_all(core.tick(now))
        for key in core.idle_proxies(now):
            proxy = relay.proxies.pop(key, None)
            if proxy is not None:
                core.own_sources.discard(local_address(proxy.socket))
                driver.forget(proxy.socket)
                proxy.socket.close()
        if next_stats is not None and on_stats is not None and now >= next_stats:
            next_stats = now + (options.stats_every or 1.0)
            on_stats(relay.stats())
        wait = core.next_timer() - now
        if end is not None:
            wait = min(wait, end - now)
        if next_stats is not None:
            wait = min(wait, next_stats - now)
        return max(wait, 0.0)

    try:
        driver.read_runs(BatchReceiver(group, slots=32, watch_load=False), from_group, READ_BATCH)
        driver.read_runs(BatchReceiver(link, slots=32, watch_load=False), from_relay, READ_BATCH)
        driver.run(turn)
    finally:
        driver.close()
        for proxy in relay.proxies.values():
            proxy.socket.close()
        link.close()
        group.close()
    return relay


def _is_ours(host: str) -> bool:
    """True when ``host`` is an address of this host (a relay's own --peer entry)."""
    probe = new_socket(6 if ":" in host else 4)
    try:
        probe.bind((host, 0) if ":" not in host else (host, 0, 0, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True
