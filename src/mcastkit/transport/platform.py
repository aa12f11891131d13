"""What this host can do, read once: the Linux-only facilities mcastkit uses where they exist,
each with the plain POSIX way it falls back to, and facts of the machine beneath the sockets.

``MCASTKIT_WITHOUT`` (a comma list of the names below, or ``all``) turns facilities off, so
the paths taken on macOS, Windows and the BSDs run on Linux too: the suite runs a subset
that way (``.ci/run``), and docs/sockets.md has the platform table.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

__all__ = ["CAPS", "Capabilities", "capabilities", "default_cipher"]

WITHOUT = "MCASTKIT_WITHOUT"


@dataclass(frozen=True)
class Capabilities:
    """Each True where the host has it (and it is not turned off)."""

    gso: bool  # UDP_SEGMENT: a run of datagrams in one send (else one per call)
    gro: bool  # UDP_GRO: coalesced receives (else recvmmsg, else one per call)
    recvmmsg: bool  # many datagrams per receive call (else one recvfrom each)
    pktinfo: bool  # destination, arrival interface, TTL, drops with each datagram (else none)
    multicast_all: bool  # IP(V6)_MULTICAST_ALL=0: only the groups one joined (else the bind)
    mreqn: bool  # IP_MULTICAST_IF by index and address (else the address)
    rcvbuf_force: bool  # SO_RCVBUFFORCE as root: past rmem_max (else SO_RCVBUF)
    meminfo: bool  # SO_MEMINFO: a socket's queue fill and drops (else unknown)
    netlink: bool  # rtnetlink link and address notices (else polling the interfaces)
    ifflags: bool  # SIOCGIFFLAGS / SIOCGIFMTU: up, carrier, MTU (else unknown)

    def to_dict(self) -> dict[str, bool]:
        """Plain data for JSON output."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


NAMES = tuple(field.name for field in fields(Capabilities))


def capabilities(platform: str = sys.platform, env: Mapping[str, str] = os.environ) -> Capabilities:
    """The facilities of ``platform``, less those ``env[MCASTKIT_WITHOUT]`` turns off."""
    linux = platform.startswith("linux")
    found = Capabilities(**dict.fromkeys(NAMES, linux))
    asked = {name.strip() for name in env.get(WITHOUT, "").split(",") if name.strip()}
    if "all" in asked:
        asked = set(NAMES)
    unknown = asked - set(NAMES)
    if unknown:
        raise ValueError(
            f"{WITHOUT}: no facility {', '.join(sorted(unknown))}; known: all, {', '.join(NAMES)}"
        )
    return replace(found, **dict.fromkeys(asked, False))


def _from_environment() -> Capabilities:
    try:
        return capabilities()
    except ValueError as exc:  # a test knob misspelt: said, and nothing turned off
        logging.getLogger("mcastkit").warning("%s", exc)
        return capabilities(env={})


CAPS = _from_environment()


@functools.cache
def default_cipher() -> str:
    """AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305 (constant time
    without them)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return "aes-256-gcm" if "aes" in line.split() else "chacha20-poly1305"
    except OSError:
        pass
    return "chacha20-poly1305"
