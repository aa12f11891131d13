"""Kernel notices of link and address changes (Linux rtnetlink), as a readable descriptor.

Only the fact that something changed is used: the caller debounces and takes a fresh
snapshot of the interfaces, so no netlink message is parsed and none can be misparsed.
Elsewhere (or when the socket cannot be opened) ``available`` is False and callers poll.
"""

from __future__ import annotations

import contextlib
import socket

from ..events import InterfaceDown, InterfaceEvent, InterfaceUp
from .interfaces import Interface, device_exists
from .platform import CAPS
from .sockets import GroupSocket

__all__ = ["LinkWatch", "follow"]

# linux/rtnetlink.h multicast groups (the legacy bit masks bind() takes)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100


class LinkWatch:
    """A non-blocking rtnetlink socket subscribed to link and address changes."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        if not CAPS.netlink:
            return
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except (OSError, AttributeError):
            return
        try:
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        self.sock = sock

    @property
    def available(self) -> bool:
        """True when the kernel will tell us about changes."""
        return self.sock is not None

    def fileno(self) -> int:
        """The descriptor to wait on (-1 when not available)."""
        return self.sock.fileno() if self.sock is not None else -1

    def drain(self) -> bool:
        """Read every queued notice; True when there was at least one (or the queue
        overflowed, which means changes were missed: take a fresh snapshot either way)."""
        if self.sock is None:
            return False
        changed = False
        while True:
            try:
                if not self.sock.recv(65536):
                    return changed
            except (BlockingIOError, InterruptedError):
                return changed
            except OSError:  # ENOBUFS: notices were lost
                return True
            changed = True

    def close(self) -> None:
        """Stop watching."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def follow(group: GroupSocket, event: InterfaceEvent, interface: Interface | None) -> None:
    """Keep ``group``'s joins right after one interface event: join on an interface that
    came up (``interface``: its fresh description); leave one that went down only when its
    device is gone. A pulled cable keeps the kernel's membership, so reception resumes the
    instant the link is back, not after the next notice. A join the kernel refuses raises
    SocketSetupError."""
    if isinstance(event, InterfaceDown):
        gone = next((i for i in group.interfaces if i.name == event.name), None)
        if gone is not None and not device_exists(gone.index):
            group.leave_interface(gone)
    elif isinstance(event, InterfaceUp) and interface is not None:
        group.join_interface(interface)
