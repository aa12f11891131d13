"""The self-test: send and receive on the chosen interface, for real."""

from __future__ import annotations

import os
import time

from ...errors import MulticastError
from ...transport import Packet, open_receiver, open_sender
from ...transport.driver import STOP, Driver
from .model import Finding, Severity, SystemView


def self_test(view: SystemView, *, count: int = 3, timeout: float = 1.0) -> Finding:
    """Send to the group on the chosen interface and receive the looped-back copies."""
    if view.chosen is None:
        return Finding(
            Severity.ERROR,
            "self-test",
            "self-test skipped: no interface to test",
            "the interface findings say why",
            hint="give --iface",
        )
    where = view.chosen.name
    try:
        with (
            open_receiver(view.group, iface=view.chosen.index) as receiver,
            open_sender(view.group, iface=view.chosen.index, ttl=0) as sender,
        ):
            token = os.urandom(8).hex().encode()
            for _ in range(count):
                sender.send(b"mcast-doctor " + token)
            got = 0
            deadline = time.monotonic() + timeout

            def take(packet: Packet) -> bool:
                nonlocal got
                got += packet.data.endswith(token)
                return got >= count

            def turn(now: float) -> float | None:
                return STOP if got >= count or now >= deadline else deadline - now

            with Driver() as driver:
                driver.read_each(receiver, take)
                driver.run(turn)
    except (MulticastError, OSError) as exc:
        return Finding(
            Severity.ERROR,
            "self-test",
            f"could not send and receive on {where}: {exc}",
            "the socket layer refused; see the other findings",
        )
    if got == 0:
        return Finding(
            Severity.ERROR,
            "self-test",
            f"sent {count} datagrams to {view.group} on {where} (TTL 0, loopback on) "
            "and received none",
            "this host drops its own multicast: a firewall rule or the interface",
            hint="see the firewall findings",
        )
    return Finding(
        Severity.OK,
        "self-test",
        f"sent {count} datagrams to {view.group} on {where} and received {got}",
    )
