"""What the file transfer's hosts share (sender_host.py, receiver_host.py): sealing, the
sender's transmitter, the pace's bounds, the ask for copies, peak memory."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..peers import Address
from ..transport.batch import BatchSender
from ..transport.platform import default_cipher
from .protocol import HEAD, MAGIC, TransferKind
from .sealing import Guard

if TYPE_CHECKING:
    from ..security import GroupKey

__all__ = [
    "ACK_WAIT",
    "BURST",
    "WANT_COPIES_DATAGRAM",
    "batch_bounds",
    "guard_for",
    "peak_rss_mb",
    "transmitter",
]

DATA_OVERHEAD = HEAD.size + 6
IPV6_EXTRA = 20  # bytes more of IP header than IPv4 has
AUTO_START_BPS = 4e9  # about 340k datagrams/s: a short transfer is not spent ramping up
SAMPLE_EVERY = 0.05  # seconds between rate samples in adaptive mode
BURST = 128  # blocks per loop turn at most: three GSO calls
MIN_BURST = 16  # a paced sender waits until it may send at least this many at once
ACK_WAIT = 5.0  # after completing, how long a receiver waits for the sender's acknowledgement


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB.

    VmHWM first: ``ru_maxrss`` survives exec, so a child of a big parent would report the
    parent's size (a forked test runner, say) instead of its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def batch_bounds(pps: float) -> tuple[float, float]:
    """The fewest datagrams a paced sender waits for before a batch (1 ms of the rate, 1 to
    MIN_BURST) and the most its bucket holds (10 ms of the rate, up to BURST)."""
    least = max(1.0, min(MIN_BURST, pps / 1000))
    return least, max(least, min(BURST, pps / 100))


def guard_for(key: GroupKey | None) -> Guard:
    if key is None:
        return Guard(None)
    from ..security import KeyRing

    return Guard(KeyRing([key], os.urandom, cipher=default_cipher()))


def transmitter(
    batch: BatchSender,
    default: tuple[str, int] | tuple[str, int, int, int],
    guard: Guard,
    copies: Callable[[], list[Address]] = list,
    to_group: bool = True,
) -> Callable[[list[tuple[bytes, Address | None]]], None]:
    """Send an engine's output, sealed when keyed: each run to one destination as one
    batch (GSO); what goes to the group goes again to each of ``copies()`` (receivers
    multicast does not reach), and only there without ``to_group``."""
    seal = guard.seal

    def transmit(out: list[tuple[bytes, Address | None]]) -> None:
        start = 0
        while start < len(out):
            destination = out[start][1]
            end = start + 1
            while end < len(out) and out[end][1] == destination:
                end += 1
            run = [seal(data) for data, _ in out[start:end]]
            if destination is not None or to_group:
                batch.send(run, destination or default)
            for target in copies() if destination is None else ():
                batch.send(run, target)
            start = end

    return transmit


WANT_COPIES_KIND = bytes([TransferKind.WANT_COPIES])
WANT_COPIES_DATAGRAM = HEAD.pack(MAGIC, TransferKind.WANT_COPIES, 0)
