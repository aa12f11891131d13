"""``send_files``: the socket host of a ``SendSession`` on the one blocking driver.

The engine (sending.py) answers and times itself through the core contract; this host owns
what it does not: the sockets and their sealing, the copies to receivers multicast does not
reach, the files' hashing thread, and the data blocks' pace (``Pacer``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..addr import GroupSpec
from ..events import SendPhase, TransferEvent
from ..pacing import TokenBucket
from ..peers import Address, random_id
from ..reach import CopyTargets
from ..transport import Packet, open_sender
from ..transport.batch import BatchReceiver, BatchSender
from ..transport.driver import STOP, Driver
from ..transport.interfaces import resolve_interface
from ..transport.unicast import bind_unicast, open_unicast
from ..units import Rate
from .protocol import BLOCK_SIZE, HEAD, Buffer
from .rate import AdaptiveRate
from .runtime import (
    AUTO_START_BPS,
    BURST,
    DATA_OVERHEAD,
    IPV6_EXTRA,
    SAMPLE_EVERY,
    WANT_COPIES_DATAGRAM,
    WANT_COPIES_KIND,
    batch_bounds,
    guard_for,
    peak_rss_mb,
    transmitter,
)
from .sealing import Guard
from .sending import SendSession
from .sources import FileHasher, FileSource, list_files

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..security import GroupKey

__all__ = ["Pacer", "SendOptions", "send_files"]

BLOCK_BITS = (BLOCK_SIZE + DATA_OVERHEAD) * 8  # a block on the wire, sealed or not


@dataclass(frozen=True)
class SendOptions:
    """How ``send_files`` sends: the options of ``mcast send-file``.

    ``peers``: receivers multicast does not reach, sent a unicast copy of every datagram
    (at the port they listen on, the group's by default); receivers may also ask for copies
    themselves (``ReceiveOptions.peers``). ``multicast`` off: only those copies, nothing to
    the group (the interface needs no MULTICAST flag).

    ``adaptive`` starts at 4 Gbit/s and follows the receivers' buffers and kernel drop
    counters (see rate.py); otherwise ``rate`` is fixed (None: as fast as possible). ``gso``
    sends runs of blocks as one UDP GSO call where the kernel allows it. ``key`` seals every
    datagram (only its holders read or take part); ``sign_key`` signs every announce, for
    receivers that trust only some senders (transfer/trust.py). ``sync``: receivers keep
    the files they already hold with the same sha256, and the first pass skips them.
    ``expected`` receivers (or those ``names``) end registration early; ``deadline``
    seconds end the transfer, done or not.
    """

    iface: str | int | None = None
    ttl: int = 1
    rate: Rate | None = None
    adaptive: bool = False
    expected: int | None = None
    names: frozenset[str] | None = None
    register_wait: float = 2.0
    receiver_timeout: float = 10.0
    deadline: float | None = None
    gso: bool = True
    key: GroupKey | None = None
    sign_key: Ed25519PrivateKey | None = None
    sync: bool = False
    peers: tuple[Address, ...] = ()
    multicast: bool = True


class Pacer:
    """The data blocks' pace: fixed, as fast as possible, or adaptive (rate.py), spent in
    batches. One GSO call carries many datagrams, so the sender waits for a batch's worth
    (waking at once for a receiver's reply). A batch never holds more than 1 ms of the rate,
    nor the bucket 10 ms (``batch_bounds``): at a slow rate, for a receiver with a small
    buffer, 16 datagrams at once were an overflow every time, and the rate never rose off
    its floor."""

    def __init__(self, pps: float | None, controller: AdaptiveRate | None, now: float) -> None:
        self.controller = controller
        self.pps = controller.pps if controller is not None else pps
        self.least, most = batch_bounds(self.pps) if self.pps is not None else (1.0, float(BURST))
        self.bucket = TokenBucket(self.pps, most, now)
        self._next_sample, self._sent_at_sample = now + SAMPLE_EVERY, 0

    def sample_due(self, now: float, session: SendSession) -> bool:
        """Adaptive: every SAMPLE_EVERY, the rate follows the receivers' last reports; True
        when it did (time to ask them again)."""
        if self.controller is None or now < self._next_sample:
            return False
        sent = session.blocks_sent - self._sent_at_sample
        self.pps = self.controller.on_sample(now, sent, session.receiver_loads())
        self.least, most = batch_bounds(self.pps)
        self.bucket.set_rate(self.pps, most)
        self._sent_at_sample, self._next_sample = session.blocks_sent, now + SAMPLE_EVERY
        return True

    def take(self, now: float) -> int:
        """Blocks that may go now (0: wait ``wait()`` seconds)."""
        self.bucket.refill(now)
        return self.bucket.take(self.least, BURST)

    def wait(self) -> float:
        return self.bucket.wait(self.least)


class _Ways:
    """The sender's sockets: to the group (or only to copies), a receiver's own address,
    and the replies; everything sealed when keyed."""

    def __init__(self, spec: GroupSpec, options: SendOptions, guard: Guard) -> None:
        if options.multicast:
            self.socket = open_sender(spec, iface=options.iface, ttl=options.ttl, sndbuf=4 << 20)
        else:
            interface = resolve_interface(options.iface, spec.family, require_multicast=False)
            self.socket = open_unicast(spec, interface)
        try:
            # At the group's port, where it is free: receivers beyond multicast name it to ask.
            bind_unicast(self.socket, spec.family, self.socket.interface, spec.port)
        except BaseException:
            self.socket.close()
            raise
        self.guard = guard
        self.copies = CopyTargets(options.peers)
        self.targets = self.copies.current(time.monotonic())
        self.batch = BatchSender(self.socket, gso=options.gso)
        self.replies = BatchReceiver(self.socket, gro=False, multi=False)
        group = self.socket.destination
        self.transmit = transmitter(
            self.batch, group, guard, lambda: self.targets, options.multicast
        )
        self._to_group = (group,) if options.multicast else ()

    def refresh(self, now: float) -> None:
        self.targets = self.copies.current(now)

    def asked_for_copies(self, opened: bytes, source: Address, now: float) -> bool:
        """A receiver beyond multicast asking for copies (True: handled here)."""
        if opened[4:5] != WANT_COPIES_KIND:
            return False
        if self.copies.want(source, now, opened[HEAD.size :]):
            self.targets = self.copies.current(now)
        else:  # prove you hear us there first: one datagram, the ask's size
            self.transmit([(WANT_COPIES_DATAGRAM + self.copies.cookies.of(source), source)])
        return True

    def send_blocks(self, parts: list[tuple[bytes, Buffer]]) -> None:
        for destination in (*self._to_group, *self.targets):
            if self.guard.ring is None:
                self.batch.send_parts(parts, destination)
            else:
                self.batch.send(self.guard.seal_parts(parts), destination)


def send_files(
    spec: GroupSpec,
    paths: list[Path],
    options: SendOptions = SendOptions(),
    *,
    on_progress: Callable[[SendSession], None] | None = None,
    on_event: Callable[[TransferEvent], None] | None = None,
) -> dict[str, Any]:
    """Distribute ``paths`` (a directory goes as a tree under its own name) to the receivers
    on the group, as ``options`` say; return the outcome. ``on_event`` gets the engine's
    ``TransferEvent``s, ``on_progress`` the session every 0.25 s."""
    host = _SendHost(spec, paths, options, on_progress)
    try:
        with Driver() as driver:
            driver.read_packets(host.ways.replies, host.handle)
            driver.host(host.session, host.ways.transmit, host.turn, on_event)
    finally:
        host.close()
    while (event := host.session.next_event()) is not None and on_event is not None:
        on_event(event)
    if host.unreadable is not None:
        raise host.unreadable
    return host.outcome()


class _SendHost:
    """One transfer: the engine, its files, its sockets and its pace."""

    def __init__(
        self,
        spec: GroupSpec,
        paths: list[Path],
        options: SendOptions,
        on_progress: Callable[[SendSession], None] | None,
    ) -> None:
        self.spec, self.options, self.on_progress = spec, options, on_progress
        self.guard = guard = guard_for(options.key)
        # A datagram fills a 1,500-byte frame: IPv6's header is 20 bytes longer than IPv4's.
        block_size = BLOCK_SIZE - guard.overhead - (IPV6_EXTRA if spec.family == 6 else 0)
        self.signer = None
        if options.sign_key is not None:
            from .trust import AnnounceSigner

            self.signer = AnnounceSigner(options.sign_key)
        self.files, sources, self.skipped = list_files(paths)
        self.source = FileSource(sources)
        try:
            self.ways = _Ways(spec, options, guard)
        except BaseException:
            self.source.close()
            raise
        now = time.monotonic()
        try:
            self.session = self._engine(options, block_size, now)
        except BaseException:  # a file list too long to announce: nothing left open
            self.close()
            raise
        if options.adaptive:
            self.pacer = Pacer(None, AdaptiveRate(AUTO_START_BPS / BLOCK_BITS), now)
        else:
            rate = options.rate
            pps = None if rate is None else rate.packets_per_second(BLOCK_BITS // 8)
            self.pacer = Pacer(pps, None, now)
        self.hasher: FileHasher | None = FileHasher(sources)
        self.unreadable: OSError | None = None
        self._last_progress = 0.0

    def _engine(self, options: SendOptions, block_size: int, now: float) -> SendSession:
        return SendSession(
            random_id(os.urandom),
            self.files,
            self.source,
            now=now,
            block_size=block_size,
            expected=options.expected,
            names=None if options.names is None else set(options.names),
            register_wait=options.register_wait,
            receiver_timeout=options.receiver_timeout,
            deadline=options.deadline,
            wall_clock=time.time,
            sign=None if self.signer is None else self.signer.sign,
            sync=options.sync,
        )

    def handle(self, packet: Packet) -> None:
        """A receiver's datagram (or an ask for copies), opened when sealed."""
        opened = self.guard.open(packet.data, packet.source)
        if opened is not None:
            source, now = (packet.source, packet.source_port), time.monotonic()
            if not self.ways.asked_for_copies(bytes(opened), source, now):
                self.session.receive_datagram(bytes(opened), source, now)

    def turn(self, now: float) -> float | None:
        """The digests once hashed, then data blocks at the pace; STOP when done."""
        session = self.session
        if session.phase == SendPhase.DONE:
            return STOP
        self.ways.refresh(now)
        if self.hasher is not None and not self.hasher.is_alive():
            if self.hasher.digests is not None:
                session.set_digests(self.hasher.digests)
            else:
                self.unreadable = self.hasher.error
                self.ways.transmit(session.abort("the sender could not read its files"))
            self.hasher = None
        wait = 0.02
        if session.phase == SendPhase.DATA:
            if self.pacer.sample_due(now, session):
                self.ways.transmit(session.progress_request())
            budget = self.pacer.take(now)
            if budget:
                self.ways.send_blocks(session.next_block_parts(budget))
                wait = 0.0
            else:
                wait = self.pacer.wait()
        if self.on_progress is not None and now - self._last_progress >= 0.25:
            self._last_progress = now
            self.on_progress(session)
        return wait

    def close(self) -> None:
        self.source.close()
        self.ways.socket.close()

    def outcome(self) -> dict[str, Any]:
        """The summary ``send_files`` returns (``mcast send-file --json``)."""
        session, guard, ways, controller = (
            self.session,
            self.guard,
            self.ways,
            self.pacer.controller,
        )
        summary = session.summary(time.monotonic())
        summary.update(
            files=[
                {"name": f.name, "size": f.size, "sha256": f.sha256}
                for f in session.files
                if not f.is_dir
            ],
            directories=[f.name for f in session.files if f.is_dir],
            skipped=self.skipped,
            bytes=sum(f.size for f in self.files),
            group=str(self.spec),
            interface=ways.socket.interface.name,
            peak_rss_mb=peak_rss_mb(),
            io={"gso": ways.batch.gso, **ways.batch.counters},
            sealed=None if guard.ring is None else guard.ring.cipher,
            signed_by=None if self.signer is None else self.signer.fingerprint.hex(),
            dropped=guard.dropped,
            # Hosts whose datagrams did not open: who tried to take part without the key.
            refused=[
                {"host": host, "dropped": counts}
                for host, counts in sorted(guard.dropped_from.items())
            ],
        )
        if controller is not None:
            summary["rate_pps_history"] = controller.history
            summary["rate_cuts"] = list(controller.cuts)
            summary["final_mbps"] = round(controller.pps * BLOCK_BITS / 1e6, 1)
        if self.options.expected is not None:
            summary["expected"] = self.options.expected
        return summary
