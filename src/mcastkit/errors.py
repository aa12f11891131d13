"""Errors raised by mcastkit.

One root (:class:`MulticastError`) so callers can catch everything we raise. Every
message names what was wrong and, where there is one, the fix.
"""

from __future__ import annotations


class MulticastError(Exception):
    """Root of every error mcastkit raises on purpose."""


class AddressError(MulticastError, ValueError):
    """A group, source or port given by the user is not what was expected."""


class InterfaceError(MulticastError):
    """An interface is missing, down, or cannot do multicast."""


class SocketSetupError(MulticastError, OSError):
    """The operating system refused a socket option, bind or membership change."""
