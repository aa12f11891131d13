"""Socket runtimes for the diagnostics: a select loop drives each sans-I/O core."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ..addr import GroupSpec
from ..transport import (
    GroupSocket,
    enable_packet_info,
    open_receiver,
    open_sender,
    set_unicast_ttl,
)
from .ping import Address, PingSession

__all__ = ["run_ping"]


def _unicast_socket(spec: GroupSpec, group_socket: GroupSocket, ttl: int, port: int) -> GroupSocket:
    """Sends everything (so peers learn where to answer) and receives unicast answers."""
    interface = group_socket.interface
    local: IPv4Address | IPv6Address | None = interface.ipv4_address
    if spec.family == 6:
        globals_ = [a.ip for a in interface.ipv6 if not a.ip.is_link_local]
        local = globals_[0] if globals_ else None
    source = None
    if local is not None:
        source = f"{local}:{port}" if spec.family == 4 else f"[{local}]:{port}"
    sender = open_sender(spec, iface=interface.index, ttl=ttl, source=source)
    if source is None:  # an interface with only link-local IPv6: bind the wildcard
        sender.sock.bind(("::", port, 0, 0))
    set_unicast_ttl(sender.sock, spec.family, ttl)
    enable_packet_info(sender.sock, spec.family)
    sender.sock.setblocking(False)
    return sender


def run_ping(
    spec: GroupSpec,
    *,
    iface: str | int | None = None,
    interval: float = 1.0,
    duration: float | None = None,
    count: int | None = None,
    ttl: int = 64,
    peers: list[Address] | None = None,
    unicast_port: int | None = None,
    on_update: Callable[[PingSession, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Ping the group until ``count`` rounds, ``duration`` seconds, or ``stop()``."""
    group_socket = open_receiver(spec, iface=iface, ttl=ttl, blocking=False)
    try:
        port = spec.port if unicast_port is None else unicast_port
        unicast = _unicast_socket(spec, group_socket, ttl, port)
    except BaseException:
        group_socket.close()
        raise
    now = time.monotonic_ns()
    session = PingSession(
        int.from_bytes(os.urandom(8), "big") or 1,
        now_ns=now,
        interval_ns=int(interval * 1e9),
        ttl=ttl,
        pinned=peers,
    )
    end = None if duration is None else now + int(duration * 1e9)
    rounds = 0
    last_update = now
    sockets = {group_socket.fileno(): group_socket, unicast.fileno(): unicast}

    def send(datagrams: list[tuple[bytes, Address | None]]) -> None:
        for data, destination in datagrams:
            try:
                unicast.send(data, destination)
            except OSError:
                session.counters["send-errors"] += 1

    try:
        while True:
            now = time.monotonic_ns()
            if end is not None and now >= end:
                break
            if stop is not None and stop():
                break
            if now >= session.next_due_ns():
                if count is not None and rounds >= count:
                    # Last round sent: wait one more interval for the answers, then stop.
                    if now >= session.next_due_ns() + session.interval_ns:
                        break
                else:
                    send(session.tick(now))
                    rounds += 1
            wait_ns = session.next_due_ns() - now
            if end is not None:
                wait_ns = min(wait_ns, end - now)
            ready, _, _ = select.select(list(sockets), [], [], max(0.0, min(wait_ns / 1e9, 0.25)))
            for fd in ready:
                sock = sockets[fd]
                while (packet := sock.recv_nowait()) is not None:
                    arrived = time.monotonic_ns()
                    send(
                        session.receive(
                            packet.data, (packet.source, packet.source_port), packet.ttl, arrived
                        )
                    )
            if on_update is not None and now - last_update >= 500_000_000:
                last_update = now
                on_update(session, now)
    finally:
        group_socket.close()
        unicast.close()
    summary = session.summary(time.monotonic_ns())
    summary.update(
        {"group": str(spec), "interface": group_socket.interface.name, "ttl": ttl, "rounds": rounds}
    )
    return summary
