"""Socket runtimes for file distribution: select loops around SendSession / ReceiveSession."""

from __future__ import annotations

import errno
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..addr import GroupSpec
from ..errors import AddressError
from ..events import ReceiveState, SendPhase, TransferEvent, TransferRefused
from ..pacing import TokenBucket
from ..peers import Address, random_id
from ..reach import CopyTargets
from ..refusals import why_refused
from ..transport import Packet, open_receiver, open_sender
from ..transport.batch import BatchReceiver, BatchSender
from ..transport.driver import STOP, Driver
from ..transport.handles import set_receive_buffer
from ..transport.interfaces import resolve_interface, router_hint
from ..transport.platform import default_cipher
from ..transport.unicast import bind_unicast, open_unicast
from ..units import Rate
from .engine import DEFAULT_MAX_SIZE, ReceiveSession, SendSession
from .partial import PARTIALS_MAX_BYTES
from .protocol import (
    BLOCK_SIZE,
    HEAD,
    MAGIC,
    TransferKind,
)
from .rate import AdaptiveRate
from .sealing import Guard
from .sources import FileHasher, FileSource, describe_files, list_files
from .storage import DirectoryStorage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from ..security import GroupKey

__all__ = ["describe_files", "receive_files", "send_files"]

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


def _guard(key: GroupKey | None) -> Guard:
    if key is None:
        return Guard(None)
    from ..security import KeyRing

    return Guard(KeyRing([key], os.urandom, cipher=default_cipher()))


def _transmitter(
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


def _report(events: list[TransferEvent], on_event: Callable[[TransferEvent], None] | None) -> None:
    if on_event is not None:
        for event in events:
            on_event(event)


def send_files(
    spec: GroupSpec,
    paths: list[Path],
    *,
    iface: str | int | None = None,
    ttl: int = 1,
    rate: Rate | None = None,
    expected: int | None = None,
    names: set[str] | None = None,
    register_wait: float = 2.0,
    receiver_timeout: float = 10.0,
    deadline: float | None = None,
    on_progress: Callable[[SendSession], None] | None = None,
    on_event: Callable[[TransferEvent], None] | None = None,
    adaptive: bool = False,
    gso: bool = True,
    key: GroupKey | None = None,
    sign_key: Ed25519PrivateKey | None = None,
    sync: bool = False,
    peers: tuple[Address, ...] = (),
    multicast: bool = True,
) -> dict[str, Any]:
    """Distribute ``paths`` to the receivers on the group; return the outcome.

    ``peers``: receivers multicast does not reach, sent a unicast copy of every datagram
    (at the port they listen on, the group's by default); receivers may also ask for copies
    themselves (``receive_files(peers=...)``). ``multicast`` off: only those copies, nothing
    to the group (the interface needs no MULTICAST flag).

    ``adaptive`` starts at 2 Gbit/s and follows the receivers' buffers and kernel drop
    counters (see rate.py); otherwise ``rate`` is fixed (None: as fast as possible). ``gso``
    sends runs of blocks as one UDP GSO call where the kernel allows it. ``key`` seals every
    datagram (only its holders read or take part); ``sign_key`` signs every announce, for
    receivers that trust only some senders (transfer/trust.py). A directory in ``paths``
    goes as a tree under its own name. ``sync``: receivers keep the files they already
    hold with the same sha256, and the first pass skips them.
    """
    guard = _guard(key)
    # A datagram fills a 1,500-byte frame: IPv6's header is 20 bytes longer than IPv4's.
    block_size = BLOCK_SIZE - guard.overhead - (IPV6_EXTRA if spec.family == 6 else 0)
    signer = None
    if sign_key is not None:
        from .trust import AnnounceSigner

        signer = AnnounceSigner(sign_key)
    files, sources, skipped = list_files(paths)
    hasher: FileHasher | None = FileHasher(sources)
    source = FileSource(sources)
    if multicast:
        sender = open_sender(spec, iface=iface, ttl=ttl, sndbuf=4 << 20)
    else:
        sender = open_unicast(spec, resolve_interface(iface, spec.family, require_multicast=False))
    # At the group's port, where it is free: receivers beyond multicast name it to ask.
    bind_unicast(sender, spec.family, sender.interface, spec.port)
    now = time.monotonic()
    copies = CopyTargets(peers)
    session = SendSession(
        random_id(os.urandom),
        files,
        source,
        now=now,
        block_size=block_size,
        expected=expected,
        names=names,
        register_wait=register_wait,
        receiver_timeout=receiver_timeout,
        deadline=deadline,
        wall_clock=time.time,
        sign=None if signer is None else signer.sign,
        sync=sync,
    )
    block_bits = (BLOCK_SIZE + DATA_OVERHEAD) * 8  # the same on the wire, sealed or not
    controller = AdaptiveRate(AUTO_START_BPS / block_bits) if adaptive else None
    if controller is not None:
        pps: float | None = controller.pps
    else:
        pps = None if rate is None else rate.packets_per_second(BLOCK_SIZE + DATA_OVERHEAD)
    # Spent in batches: one GSO call carries many datagrams, so the sender waits for a
    # batch's worth (waking at once for a receiver's reply). A batch never holds more than
    # 1 ms of the rate, nor the bucket 10 ms (batch_bounds): at a slow rate, for a receiver
    # with a small buffer, 16 datagrams at once were an overflow every time, and the rate
    # never rose off its floor.
    least, most = batch_bounds(pps) if pps is not None else (1.0, float(BURST))
    bucket = TokenBucket(pps, most, now)
    next_sample, sent_at_sample = now + SAMPLE_EVERY, 0
    last_progress = 0.0
    batch = BatchSender(sender, gso=gso)
    replies = BatchReceiver(sender, gro=False, multi=False)
    group = sender.destination
    targets = copies.current(now)
    transmit = _transmitter(batch, group, guard, lambda: targets, multicast)
    to_group = (group,) if multicast else ()

    def handle(packet: Packet) -> None:
        nonlocal targets
        opened = guard.open(packet.data, packet.source)
        if opened is not None:
            source = (packet.source, packet.source_port)
            if bytes(opened[4:5]) == WANT_COPIES_KIND:
                proof = bytes(opened[HEAD.size :])
                if copies.want(source, time.monotonic(), proof):
                    targets = copies.current(time.monotonic())
                else:  # prove you hear us there first: one datagram, the ask's size
                    transmit([(WANT_COPIES_DATAGRAM + copies.cookies.of(source), source)])
                return
            transmit(session.receive(bytes(opened), source, time.monotonic()))

    unreadable: OSError | None = None

    def turn(now: float) -> float | None:
        nonlocal hasher, unreadable, pps, least, next_sample, sent_at_sample, last_progress
        nonlocal targets
        if session.phase == SendPhase.DONE:
            return STOP
        targets = copies.current(now)
        if hasher is not None and not hasher.is_alive():
            if hasher.digests is not None:
                session.set_digests(hasher.digests)
            else:
                unreadable = hasher.error
                transmit(session.abort("the sender could not read its files"))
            hasher = None
        transmit(session.tick(now))
        bucket.refill(now)
        wait = 0.02
        if session.phase == SendPhase.DATA:
            if controller is not None and now >= next_sample:
                pps = controller.on_sample(
                    now, session.blocks_sent - sent_at_sample, session.receiver_loads()
                )
                least, most = batch_bounds(pps)
                bucket.set_rate(pps, most)
                sent_at_sample, next_sample = session.blocks_sent, now + SAMPLE_EVERY
                transmit(session.progress_request())
            budget = bucket.take(least, BURST)
            if budget:
                parts = session.next_block_parts(budget)
                for destination in (*to_group, *targets):
                    if guard.ring is None:
                        batch.send_parts(parts, destination)
                    else:
                        batch.send(guard.seal_parts(parts), destination)
                wait = 0.0
            else:
                wait = bucket.wait(least)
        if on_progress is not None and now - last_progress >= 0.25:
            last_progress = now
            on_progress(session)
        _report(session.events(), on_event)
        return wait

    try:
        with Driver() as driver:
            driver.read_packets(replies, handle)
            driver.run(turn)
    finally:
        source.close()
        sender.close()
    _report(session.events(), on_event)
    if unreadable is not None:
        raise unreadable
    summary = session.summary(time.monotonic())
    summary["files"] = [
        {"name": f.name, "size": f.size, "sha256": f.sha256} for f in session.files if not f.is_dir
    ]
    summary["directories"] = [f.name for f in session.files if f.is_dir]
    summary["skipped"] = skipped
    summary["bytes"] = sum(f.size for f in files)
    summary["group"] = str(spec)
    summary["interface"] = sender.interface.name
    summary["peak_rss_mb"] = peak_rss_mb()
    summary["io"] = {"gso": batch.gso, **batch.counters}
    summary["sealed"] = None if guard.ring is None else guard.ring.cipher
    summary["signed_by"] = None if signer is None else signer.fingerprint.hex()
    summary["dropped"] = guard.dropped
    # Hosts whose datagrams did not open: who tried to take part without the key.
    summary["refused"] = [
        {"host": host, "dropped": counts} for host, counts in sorted(guard.dropped_from.items())
    ]
    if controller is not None:
        summary["rate_pps_history"] = controller.history
        summary["rate_cuts"] = list(controller.cuts)
        summary["final_mbps"] = round(controller.pps * block_bits / 1e6, 1)
    if expected is not None:
        summary["expected"] = expected
    return summary


def receive_files(
    spec: GroupSpec,
    directory: Path,
    *,
    iface: str | int | None = None,
    name: str | None = None,
    wait: float | None = None,
    rcvbuf: int = 16 << 20,
    on_progress: Callable[[ReceiveSession], None] | None = None,
    on_event: Callable[[TransferEvent], None] | None = None,
    stop: Callable[[], bool] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    max_partials: int = PARTIALS_MAX_BYTES,
    overwrite: bool = False,
    parents: bool = False,
    gro: bool = True,
    key: GroupKey | None = None,
    trust: list[Ed25519PublicKey] | None = None,
    max_skew: float = 30.0,
    resume: bool = True,
    sync: bool = False,
    preserve: bool = False,
    peers: tuple[Address, ...] = (),
    multicast: bool = True,
) -> dict[str, Any]:
    """Receive one transfer into ``directory``; ``wait`` bounds the wait for an announce.

    ``peers``: senders whose multicast may not reach this host, asked every second for
    unicast copies (sent to the group's port here, where this receiver listens when no
    other program does). ``multicast`` off: nothing is joined, only those copies are heard
    (``peers`` is then needed; the interface needs no MULTICAST flag).

    A transfer announcing more than ``max_size`` bytes, or more than the directory's free
    space, is refused before anything is written. ``gro`` takes coalesced runs of datagrams
    (UDP GRO) from the kernel where it offers them. ``key``: only a transfer sealed with this
    group key is heard. ``trust``: only an announce signed by one of these keys starts a
    transfer. Either way an announce stamped further than ``max_skew`` seconds from this
    host's clock is refused (a replay). ``resume``: a transfer cut short (interrupted, the
    sender silent) keeps its partial files with a record of their blocks, and a later
    transfer of the same content asks only for the rest (transfer/partial.py); the kept
    partials of a directory hold at most ``max_partials`` bytes, the oldest go. ``sync``
    keeps files already here with the announced sha256 (as a sender's ``sync`` does) and
    replaces those that differ. ``preserve`` applies the announced modes and mtimes.
    """
    guard = _guard(key)
    check = None
    if key is not None or trust is not None:
        from .trust import AnnounceCheck

        check = AnnounceCheck(trust, max_skew=max_skew, wall_clock=time.time)
    if parents:
        directory.mkdir(parents=True, exist_ok=True)
    elif not directory.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "no such directory (create it, or give --parents)", str(directory)
        )
    group_socket = None
    if multicast:
        group_socket = open_receiver(spec, iface=iface, rcvbuf=rcvbuf, blocking=False)
        interface = group_socket.interface
        try:
            unicast = open_sender(spec, iface=interface.index)
        except BaseException:
            group_socket.close()
            raise
    elif not peers:
        raise AddressError("with multicast off a receiver hears only copies: give --peer SENDER")
    else:
        interface = resolve_interface(iface, spec.family, require_multicast=False)
        unicast = open_unicast(spec, interface)
        set_receive_buffer(unicast, rcvbuf)
    bind_unicast(unicast, spec.family, interface, spec.port)
    data_socket = group_socket if group_socket is not None else unicast
    next_ask = 0.0
    now = time.monotonic()
    session = ReceiveSession(
        random_id(os.urandom),
        name or f"{os.uname().nodename}-{os.getpid()}",
        # The receiver decides what is replaced: its --overwrite, or its --sync. Partials
        # resume only under the same protection they were written under.
        DirectoryStorage(
            directory,
            overwrite=overwrite or sync,
            resume=resume,
            preserve=preserve,
            trust=("sealed" if key is not None else "open") + ("/signed" if trust else ""),
            max_partials=max_partials,
        ),
        now=now,
        max_size=max_size,
        check_announce=check,
        sync=sync,
    )
    started = now
    finished_at: float | None = None
    last_progress = 0.0
    refusal_said = False  # the first refused datagram is said at once, once

    batch = BatchSender(unicast, gso=False)
    # Only the data socket's drops and fill say whether the sender is too fast.
    data_reader = BatchReceiver(data_socket, gro=gro)
    readers = [data_reader]
    if group_socket is not None:
        readers.append(BatchReceiver(unicast, gro=False, slots=8, watch_load=False))

    def transmit(out: list[tuple[bytes, Address | None]]) -> None:
        for data, destination in out:
            if destination is not None:  # a receiver only ever answers its sender
                batch.send([guard.seal(data)], destination)

    def handle(
        buffer: memoryview, spans: list[tuple[int, int]], source: Address, drops: int | None
    ) -> None:
        if drops is not None:  # the adaptive sender's signals
            session.kernel_drops = drops
        session.queue_fill = data_reader.fill
        buffer, spans = guard.open_runs(buffer, spans)
        transmit(session.receive_many(buffer, spans, source, time.monotonic()))

    def turn(now: float) -> float | None:
        nonlocal finished_at, last_progress, next_ask, refusal_said
        if session.finished or (stop is not None and stop()):
            return STOP
        if peers and now >= next_ask and session.state != ReceiveState.COMPLETE:
            next_ask = now + 1.0  # until done: a sender's copies stop 5 s after the last ask
            transmit([(WANT_COPIES_DATAGRAM + session.cookies.get(p, b""), p) for p in peers])
        if session.state == ReceiveState.WAITING and not refusal_said:
            why = _why_nothing(guard, session)
            if why is not None and on_event is not None:
                refusal_said = True
                on_event(TransferRefused(0, why))
        if session.state == ReceiveState.WAITING and wait is not None and now - started > wait:
            session.reason = f"no transfer announced on {spec} within {wait}s"
            why = _why_nothing(guard, session) or router_hint(
                spec,
                [interface.name],
                "the sender needs send-file --ttl 4 or more",
            )
            if why:
                session.reason += f": {why}"
            return STOP
        if session.state in (ReceiveState.COMPLETE, ReceiveState.FAILED):
            finished_at = finished_at or now
            if now - finished_at > ACK_WAIT:
                return STOP  # the result stands; the sender just did not acknowledge it
        transmit(session.tick(now))
        if on_progress is not None and now - last_progress >= 0.25:
            last_progress = now
            on_progress(session)
        _report(session.events(), on_event)
        return 0.05

    try:
        with Driver() as driver:
            for receiver in readers:
                driver.read_runs(receiver, handle)
            driver.run(turn)
    finally:
        if session.sink is not None and session.state == ReceiveState.RECEIVING:
            # Interrupted: keep what a later transfer can resume from, or leave nothing.
            if resume:
                session.suspend()
            else:
                session.sink.discard()
        load = data_socket.load()  # also the drops after the last datagram read
        if load is not None:
            session.kernel_drops = load.drops
        if group_socket is not None:
            group_socket.close()
        unicast.close()
    _report(session.events(), on_event)
    summary = session.summary()
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["directory"] = str(directory)
    summary["io"] = {"gro": data_reader.gro, **data_reader.counters}
    summary["peak_rss_mb"] = peak_rss_mb()
    summary["sealed"] = guard.ring is not None
    summary["dropped"] = guard.dropped
    return summary


def _why_nothing(guard: Guard, session: ReceiveSession) -> str | None:
    """What a receiver that took no transfer heard instead, as a hint."""
    if guard.dropped.get("sealed-without-key"):
        return why_refused(guard.dropped)
    if session.refused_last is not None:
        (host, _port), reason = session.refused_last
        return f"refused an announce from {host}: {reason}"
    return why_refused(guard.dropped)
