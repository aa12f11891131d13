"""``receive_files``: the socket host of a ``ReceiveSession`` on the one blocking driver.

The engine (receiving.py) answers and times itself through the core contract; this host owns
the sockets (the group's, and a unicast one the sender's answers and copies come to), the
opening of sealed datagrams, the asks for copies, and when to stop waiting.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..addr import GroupSpec
from ..errors import AddressError
from ..events import ReceiveState, TransferEvent, TransferRefused
from ..peers import Address, random_id
from ..refusals import why_refused
from ..transport import GroupSocket, open_receiver, open_sender
from ..transport.batch import BatchReceiver, BatchSender
from ..transport.driver import STOP, Driver
from ..transport.handles import set_receive_buffer
from ..transport.interfaces import resolve_interface, router_hint
from ..transport.unicast import bind_unicast, open_unicast
from .engine import DEFAULT_MAX_SIZE, ReceiveSession
from .partial import PARTIALS_MAX_BYTES
from .protocol import Out
from .runtime import ACK_WAIT, WANT_COPIES_DATAGRAM, guard_for, peak_rss_mb
from .sealing import Guard
from .storage import DirectoryStorage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..security import GroupKey

__all__ = ["ReceiveOptions", "receive_files"]


@dataclass(frozen=True)
class ReceiveOptions:
    """How ``receive_files`` receives: the options of ``mcast recv-file``.

    ``wait`` bounds the wait for an announce (None: no bound); ``name`` is what the sender
    lists (host-pid by default). ``peers``: senders whose multicast may not reach this host,
    asked every second for unicast copies (sent to the group's port here, where this
    receiver listens when no other program does). ``multicast`` off: nothing is joined,
    only those copies are heard (``peers`` is then needed; the interface needs no MULTICAST
    flag).

    A transfer announcing more than ``max_size`` bytes, or more than the directory's free
    space, is refused before anything is written. ``gro`` takes coalesced runs of datagrams
    (UDP GRO) from the kernel where it offers them. ``key``: only a transfer sealed with
    this group key is heard. ``trust``: only an announce signed by one of these keys starts
    a transfer. Either way an announce stamped further than ``max_skew`` seconds from this
    host's clock is refused (a replay). ``resume``: a transfer cut short (interrupted, the
    sender silent) keeps its partial files with a record of their blocks, and a later
    transfer of the same content asks only for the rest (transfer/partial.py); the kept
    partials of a directory hold at most ``max_partials`` bytes, the oldest go. ``sync``
    keeps files already here with the announced sha256 (as a sender's ``sync`` does) and
    replaces those that differ. ``preserve`` applies the announced modes and mtimes.
    ``overwrite`` replaces files of the same name; ``parents`` creates the directory.
    """

    iface: str | int | None = None
    name: str | None = None
    wait: float | None = None
    rcvbuf: int = 16 << 20
    max_size: int = DEFAULT_MAX_SIZE
    max_partials: int = PARTIALS_MAX_BYTES
    overwrite: bool = False
    parents: bool = False
    gro: bool = True
    key: GroupKey | None = None
    trust: tuple[Ed25519PublicKey, ...] | None = None
    max_skew: float = 30.0
    resume: bool = True
    sync: bool = False
    preserve: bool = False
    peers: tuple[Address, ...] = ()
    multicast: bool = True


class _Ways:
    """The receiver's sockets: the group's (unless only copies are heard) for the data, and
    a unicast one at the group's port for the sender's answers and copies."""

    def __init__(self, spec: GroupSpec, options: ReceiveOptions, guard: Guard) -> None:
        self.group: GroupSocket | None = None
        if options.multicast:
            self.group = open_receiver(
                spec, iface=options.iface, rcvbuf=options.rcvbuf, blocking=False
            )
            self.interface = self.group.interface
            try:
                self.unicast = open_sender(spec, iface=self.interface.index)
            except BaseException:
                self.group.close()
                raise
        elif not options.peers:
            raise AddressError(
                "with multicast off a receiver hears only copies: give --peer SENDER"
            )
        else:
            self.interface = resolve_interface(options.iface, spec.family, require_multicast=False)
            self.unicast = open_unicast(spec, self.interface)
            set_receive_buffer(self.unicast, options.rcvbuf)
        try:
            bind_unicast(self.unicast, spec.family, self.interface, spec.port)
        except BaseException:
            self.close()
            raise
        self.data = self.group if self.group is not None else self.unicast
        self.guard = guard
        self.batch = BatchSender(self.unicast, gso=False)
        # Only the data socket's drops and fill say whether the sender is too fast.
        self.data_reader = BatchReceiver(self.data, gro=options.gro)
        self.readers = [self.data_reader]
        if self.group is not None:
            self.readers.append(BatchReceiver(self.unicast, gro=False, slots=8, watch_load=False))

    def transmit(self, out: Out) -> None:
        for data, destination in out:
            if destination is not None:  # a receiver only ever answers its sender
                self.batch.send([self.guard.seal(data)], destination)

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
        self.unicast.close()


def receive_files(
    spec: GroupSpec,
    directory: Path,
    options: ReceiveOptions = ReceiveOptions(),
    *,
    on_progress: Callable[[ReceiveSession], None] | None = None,
    on_event: Callable[[TransferEvent], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Receive one transfer into ``directory``, as ``options`` say; return the outcome.
    ``on_event`` gets the engine's ``TransferEvent``s (and a ``TransferRefused`` saying why
    nothing was taken, once), ``on_progress`` the session every 0.25 s; ``stop()`` True
    ends the wait (an interrupt: a transfer under way keeps what it can resume from)."""
    if options.parents:
        directory.mkdir(parents=True, exist_ok=True)
    elif not directory.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "no such directory (create it, or give --parents)", str(directory)
        )
    host = _ReceiveHost(spec, directory, options, on_progress, on_event, stop)
    try:
        with Driver() as driver:
            for reader in host.ways.readers:
                driver.read_runs(reader, host.handle)
            driver.host(host.session, host.ways.transmit, host.turn, on_event)
    finally:
        host.close()
    while (event := host.session.next_event()) is not None and on_event is not None:
        on_event(event)
    return host.outcome(directory)


class _ReceiveHost:
    """One transfer taken: the engine, its sockets, and when to stop waiting."""

    def __init__(
        self,
        spec: GroupSpec,
        directory: Path,
        options: ReceiveOptions,
        on_progress: Callable[[ReceiveSession], None] | None,
        on_event: Callable[[TransferEvent], None] | None,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.spec, self.options = spec, options
        self.on_progress, self.on_event, self.stop = on_progress, on_event, stop
        self.guard = guard_for(options.key)
        check = None
        if options.key is not None or options.trust is not None:
            from .trust import AnnounceCheck

            trust = None if options.trust is None else list(options.trust)
            check = AnnounceCheck(trust, max_skew=options.max_skew, wall_clock=time.time)
        self.ways = _Ways(spec, options, self.guard)
        self.started = time.monotonic()
        self.session = ReceiveSession(
            random_id(os.urandom),
            options.name or f"{os.uname().nodename}-{os.getpid()}",
            # The receiver decides what is replaced: its --overwrite, or its --sync.
            # Partials resume only under the same protection they were written under.
            DirectoryStorage(
                directory,
                overwrite=options.overwrite or options.sync,
                resume=options.resume,
                preserve=options.preserve,
                trust=("sealed" if options.key is not None else "open")
                + ("/signed" if options.trust else ""),
                max_partials=options.max_partials,
            ),
            now=self.started,
            max_size=options.max_size,
            check_announce=check,
            sync=options.sync,
        )
        self._finished_at: float | None = None
        self._last_progress = self._next_ask = 0.0
        self._refusal_said = False  # the first refused datagram is said at once, once

    def handle(
        self, buffer: memoryview, spans: list[tuple[int, int]], source: Address, drops: int | None
    ) -> None:
        """A batch of datagrams from one source, opened when sealed, taken in place."""
        session = self.session
        if drops is not None:  # the adaptive sender's signals
            session.kernel_drops = drops
        session.queue_fill = self.ways.data_reader.fill
        buffer, spans = self.guard.open_runs(buffer, spans)
        session.receive_batch(buffer, spans, source, time.monotonic())

    def turn(self, now: float) -> float | None:
        """Asks for copies, why nothing comes, the waits' ends; STOP when done."""
        session, options = self.session, self.options
        state = session.state
        if session.finished or (self.stop is not None and self.stop()):
            return STOP
        if options.peers and now >= self._next_ask and state != ReceiveState.COMPLETE:
            self._next_ask = now + 1.0  # until done: copies stop 5 s after the last ask
            self.ways.transmit(
                [(WANT_COPIES_DATAGRAM + session.cookies.get(p, b""), p) for p in options.peers]
            )
        if state == ReceiveState.WAITING:
            timed_out = options.wait is not None and now - self.started > options.wait
            why = None
            if not self._refusal_said or timed_out:  # looked at until said, and at the end
                why = _why_nothing(self.guard, session)
            if why is not None and self.on_event is not None and not self._refusal_said:
                self._refusal_said = True
                self.on_event(TransferRefused(0, why))
            if timed_out and options.wait is not None:
                session.reason = _nothing_announced(self.spec, options.wait, why, self.ways)
                return STOP
        if state in (ReceiveState.COMPLETE, ReceiveState.FAILED):
            self._finished_at = self._finished_at or now
            if now - self._finished_at > ACK_WAIT:
                return STOP  # the result stands; the sender just did not acknowledge it
        if self.on_progress is not None and now - self._last_progress >= 0.25:
            self._last_progress = now
            self.on_progress(session)
        return 0.05

    def close(self) -> None:
        """Interrupted: keep what a later transfer can resume from, or leave nothing."""
        session = self.session
        if session.sink is not None and session.state == ReceiveState.RECEIVING:
            if self.options.resume:
                session.suspend()
            else:
                session.sink.discard()
        load = self.ways.data.load()  # also the drops after the last datagram read
        if load is not None:
            session.kernel_drops = load.drops
        self.ways.close()

    def outcome(self, directory: Path) -> dict[str, Any]:
        """The summary ``receive_files`` returns (``mcast recv-file --json``)."""
        summary = self.session.summary()
        summary.update(
            seconds=round(time.monotonic() - self.started, 3),
            directory=str(directory),
            io={"gro": self.ways.data_reader.gro, **self.ways.data_reader.counters},
            peak_rss_mb=peak_rss_mb(),
            sealed=self.guard.ring is not None,
            dropped=self.guard.dropped,
        )
        return summary


def _nothing_announced(spec: GroupSpec, wait: float, why: str | None, ways: _Ways) -> str:
    """Why a receiver gives up waiting, with what it heard instead or a router's hint."""
    reason = f"no transfer announced on {spec} within {wait}s"
    hint = why or router_hint(
        spec, [ways.interface.name], "the sender needs send-file --ttl 4 or more"
    )
    return f"{reason}: {hint}" if hint else reason


def _why_nothing(guard: Guard, session: ReceiveSession) -> str | None:
    """What a receiver that took no transfer heard instead, as a hint."""
    if guard.dropped.get("sealed-without-key"):
        return why_refused(guard.dropped)
    if session.refused_last is not None:
        (host, _port), reason = session.refused_last
        return f"refused an announce from {host}: {reason}"
    return why_refused(guard.dropped)
