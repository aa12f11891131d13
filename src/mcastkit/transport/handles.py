"""What the transport's helpers take: an OS socket, or one of ours that holds it (a
``GroupSocket``, a ``Capture``). Code above the transport never reaches for ``.sock``."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol, Union

from ..errors import SocketSetupError

__all__ = [
    "SocketLike",
    "bind_any",
    "connected_send",
    "local_address",
    "nonblocking",
    "os_socket",
    "set_receive_buffer",
    "set_unicast_ttl",
    "setup_error",
]


Buffer = bytes | bytearray | memoryview


class HoldsSocket(Protocol):
    @property
    def sock(self) -> socket.socket: ...


SocketLike = Union[socket.socket, HoldsSocket]  # noqa: UP007 (a Protocol in a runtime union)


def os_socket(handle: SocketLike) -> socket.socket:
    """The OS socket behind ``handle``."""
    return handle if isinstance(handle, socket.socket) else handle.sock


def nonblocking(handle: SocketLike) -> None:
    """Make ``handle`` non-blocking (a loop drives it)."""
    os_socket(handle).setblocking(False)


def local_address(handle: SocketLike) -> tuple[str, int]:
    """The address and port ``handle`` is bound to (port 0: not bound)."""
    host, port = os_socket(handle).getsockname()[:2]
    return str(host), int(port)


def bind_any(handle: SocketLike, family: int, port: int) -> None:
    """Bind to the wildcard address of ``family`` and ``port``."""
    os_socket(handle).bind(("0.0.0.0", port) if family == 4 else ("::", port, 0, 0))


def set_receive_buffer(handle: SocketLike, size: int) -> None:
    """Ask for a receive buffer of ``size`` bytes (the kernel caps it at rmem_max)."""
    os_socket(handle).setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def connected_send(handle: SocketLike, destination: tuple[object, ...]) -> Callable[[Buffer], int]:
    """Connect ``handle`` to ``destination`` and return its ``send``: a connected socket skips
    the address conversion ``sendto`` does per call."""
    sock = os_socket(handle)
    sock.connect(destination)
    return sock.send


def setup_error(action: str, exc: OSError, *, hint: str = "") -> SocketSetupError:
    """A socket option or bind the OS refused, said as what we tried and why."""
    detail = exc.strerror or str(exc)
    text = f"{action} failed: {detail}"
    if hint:
        text += f"; {hint}"
    error = SocketSetupError(text)
    error.errno = exc.errno
    return error


def set_unicast_ttl(handle: SocketLike, family: int, ttl: int) -> None:
    """TTL / hop limit of unicast datagrams sent on ``handle``."""
    sock = os_socket(handle)
    try:
        if family == 4:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    except OSError as exc:
        raise setup_error(f"setting unicast TTL {ttl}", exc) from exc
