"""Batched datagram I/O: UDP GSO on send, UDP GRO on receive (Linux), with clean fallbacks.

Python pays per system call, not per byte: one ``sendmsg`` carrying 44 segments of 1,472
bytes (``UDP_SEGMENT``) costs about what one datagram does, and the kernel cuts the batch
into datagrams (in the NIC, or in software before the wire). On receive, ``UDP_GRO`` lets the
kernel hand over a run of same-size datagrams from one source in one buffer, with the segment
size in a control message. What leaves and what arrives are ordinary datagrams: peers
without GSO/GRO see no difference.

Send policy, for every caller: a full socket buffer (EAGAIN) waits for the socket to become
writable (bounded), never drops silently; other errors are counted by errno name.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable, Sequence

from . import mmsg
from .ancillary import (
    CMSG_BUFSIZE,
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_PKTINFO,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    SO_RXQ_OVFL,
    Packet,
    parse_ancillary,
    queue_load,
)
from .handles import Buffer, SocketLike, os_socket
from .interfaces import scoped, zoned
from .mmsg import MultiReceive
from .platform import CAPS

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: the segment size of a GSO send
UDP_GRO = 104  # linux/udp.h: coalesce on receive; the segment size comes as a cmsg
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in kernels before 6.9 (128 after)
GSO_MAX_BYTES = 65_000  # one GSO send is one IP datagram before segmentation: under 64 KiB
RECV_BUFFER = 1 << 16
WRITABLE_WAIT = 1.0  # seconds a send waits for room in a full socket buffer
_SEGMENT = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_DROPS = struct.Struct("=I")
_IFINDEX = struct.Struct("=i")
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: the enum's & costs a microsecond
# The kernel refuses a GSO send with these when the path cannot do it (no checksum offload,
# SO_NO_CHECK, xfrm, an old kernel): fall back to one datagram per call, for good.
_GSO_REFUSALS = {errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EPROTO}

Destination = tuple[str, int] | tuple[str, int, int, int]
# handle(buffer, [(start, end), ...], (source, port), kernel drops or None); the buffer is
# reused by the next receive
RunHandler = Callable[[memoryview, list[tuple[int, int]], tuple[str, int], "int | None"], None]


def gso_supported(sock: socket.socket) -> bool:
    """True when the kernel knows ``UDP_SEGMENT`` on this socket (a send may still refuse)."""
    if not CAPS.gso:
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced receives; False when the kernel does not offer ``UDP_GRO``."""
    if not CAPS.gro:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def quiet_control_messages(sock: socket.socket) -> None:
    """Turn off the per-datagram control messages ``enable_packet_info`` asked for."""
    for level, option in (
        (socket.SOL_SOCKET, SO_RXQ_OVFL),
        (socket.IPPROTO_IP, IP_PKTINFO),
        (socket.IPPROTO_IP, IP_RECVTTL),
        (socket.IPPROTO_IPV6, IPV6_RECVPKTINFO),
        (socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT),
    ):
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, 0)


class _Full(Exception):
    """The socket buffer is full (a non-waiting send stops here); ``done``: datagrams of the
    call dealt with before it."""

    def __init__(self) -> None:
        super().__init__()
        self.done = 0


def _split(buffers: Sequence[Buffer], size: int) -> list[bytes]:
    joined = b"".join(buffers)
    return [joined[offset : offset + size] for offset in range(0, len(joined), size)]


class BatchSender:
    """Sends lists of datagrams; a run of same-size ones to one destination is one call.

    ``counters``: ``gso-calls``, ``datagrams``, ``gso-refused`` (the fallback was taken),
    ``gso-oversize`` (segments over the path MTU went one by one, for the kernel to
    fragment), ``waits`` (the buffer was full), ``dropped:<ERRNO>`` (a datagram the kernel
    refused).
    """

    def __init__(self, sock: SocketLike, *, gso: bool = True) -> None:
        sock = self.sock = os_socket(sock)
        self.gso = gso and gso_supported(sock)
        self._gso_limit = 1 << 16  # segments this large or larger go one by one (EMSGSIZE)
        self.counters: Counter[str] = Counter()
        self._nowait = False

    def send_nowait(self, datagrams: Sequence[Buffer], destination: Destination) -> int:
        """For an event loop: send what the socket takes now. Returns how many datagrams
        were dealt with (sent, or refused by the kernel and counted); it stops at a full
        buffer, and the caller keeps the rest until the socket is writable."""
        self._nowait = True
        done = 0
        try:
            for start in range(0, len(datagrams), GSO_MAX_SEGMENTS):
                run = datagrams[start : start + GSO_MAX_SEGMENTS]
                self.send(run, destination)
                done += len(run)
        except _Full as full:
            done += full.done
        finally:
            self._nowait = False
        return done

    def send_queue(
        self, queue: deque[tuple[bytes, Destination | None]], default: Destination
    ) -> bool:
        """For an event loop: send from the front of ``queue`` (datagram, destination; None
        for ``default``) what the socket takes now, runs to one destination as batches. What
        was sent, or refused by the kernel and counted, leaves the queue. True when the
        socket buffer filled: call again once it is writable."""
        while len(queue) == 1:  # the common case (one message): no batch to build
            data, destination = queue[0]
            try:
                self.sock.sendto(data, scoped(destination or default))
            except BlockingIOError:
                return True
            except OSError as exc:
                self.counters[f"dropped:{errno.errorcode.get(exc.errno or 0, '?')}"] += 1
            queue.popleft()
        while queue:
            destination = queue[0][1]
            run: list[Buffer] = []
            for data, to in queue:
                if to != destination or len(run) == GSO_MAX_SEGMENTS:
                    break
                run.append(data)
            done = self.send_nowait(run, destination or default)
            for _ in range(done):
                queue.popleft()
            if done < len(run):
                return True
        return False

    def send(self, datagrams: Sequence[Buffer], destination: Destination) -> int:
        """Send every datagram to ``destination``; returns how many the kernel took."""
        sizes = [len(data) for data in datagrams]
        return self._send_runs([(data,) for data in datagrams], sizes, destination)

    def send_parts(self, parts: Sequence[tuple[Buffer, Buffer]], destination: Destination) -> int:
        """Like ``send``, for datagrams given as (header, payload): never joined in Python,
        the kernel gathers them (one iovec pair per datagram)."""
        sizes = [len(head) + len(body) for head, body in parts]
        return self._send_runs(parts, sizes, destination)

    def _send_runs(
        self, datagrams: Sequence[Sequence[Buffer]], sizes: list[int], destination: Destination
    ) -> int:
        """Datagrams given as their pieces, and their sizes; each run of same-size ones (the
        last may be shorter, within the GSO limits) goes as one GSO call."""
        destination = scoped(destination)
        sent = 0
        count = len(datagrams)
        start = 0
        while start < count:
            size = sizes[start]
            limit = min(count, start + min(GSO_MAX_SEGMENTS, max(1, GSO_MAX_BYTES // size)))
            end = start + 1
            while end < limit and sizes[end] == size:
                end += 1
            if end < limit and sizes[end] < size:
                end += 1  # the last segment of a GSO send may be shorter
            try:
                if self.gso and end - start > 1 and size < self._gso_limit:
                    buffers = [piece for pieces in datagrams[start:end] for piece in pieces]
                    sent += self._send_gso(buffers, size, destination, end - start)
                else:
                    sent += self._send_each(datagrams[start:end], destination)
            except _Full as full:
                full.done += start
                raise
            start = end
        return sent

    def _send_gso(
        self, buffers: Sequence[Buffer], size: int, destination: Destination, count: int
    ) -> int:
        """``buffers`` laid end to end are ``count`` datagrams of ``size`` bytes (the last may
        be shorter)."""
        control = [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))]
        while True:
            try:
                self.sock.sendmsg(buffers, control, 0, destination)
            except BlockingIOError:
                if self._nowait:
                    raise _Full from None
                if self._wait_writable():
                    continue
                self.counters["dropped:EAGAIN"] += count
                return 0
            except OSError as exc:
                if exc.errno in _GSO_REFUSALS:
                    self.gso = False
                    self.counters["gso-refused"] += 1
                elif exc.errno == errno.EMSGSIZE:
                    # Segments larger than the path MTU (1,472-byte datagrams over IPv6):
                    # GSO cannot fragment them, the one-datagram path can. This size and
                    # larger go that way from now on.
                    self._gso_limit = min(self._gso_limit, size)
                    self.counters["gso-oversize"] += 1
                else:
                    self.counters[f"dropped:{errno.errorcode.get(exc.errno or 0, '?')}"] += count
                    return 0
                # This call's datagrams go one by one.
                return self._send_each([(data,) for data in _split(buffers, size)], destination)
            self.counters["gso-calls"] += 1
            self.counters["datagrams"] += count
            return count

    def _send_each(self, datagrams: Sequence[Sequence[Buffer]], destination: Destination) -> int:
        """One by one; a full buffer (non-waiting) says how many went before it, so the
        caller does not send those again."""
        sent = 0
        for index, pieces in enumerate(datagrams):
            try:
                sent += self._send_one(pieces, destination)
            except _Full as full:
                full.done = index
                raise
        return sent

    def _send_one(self, pieces: Sequence[Buffer], destination: Destination) -> int:
        while True:
            try:
                self.sock.sendmsg(pieces, (), 0, destination)
            except BlockingIOError:
                if self._nowait:
                    raise _Full from None
                if self._wait_writable():
                    continue
                self.counters["dropped:EAGAIN"] += 1
                return 0
            except OSError as exc:
                self.counters[f"dropped:{errno.errorcode.get(exc.errno or 0, '?')}"] += 1
                return 0
            self.counters["datagrams"] += 1
            return 1

    def _wait_writable(self) -> bool:
        self.counters["waits"] += 1
        _, writable, _ = select.select([], [self.sock], [], WRITABLE_WAIT)
        return bool(writable)


class BatchReceiver:
    """Drains a socket in batches, splitting what GRO coalesced (one source, one size):
    ``receive_runs`` hands the datagrams over in place, ``receive`` as ``Packet``s.

    ``slots``: datagrams per ``recvmmsg`` call, each slot 64 KiB (a GRO buffer's most), so
    this is the memory it holds: 2 MiB at 32. ``watch_load``: read the kernel's drop counter
    and the buffer's fill once per drain (a system call) and hand the drops over; without it
    the handler gets None. ``arrival``: keep each datagram's arrival interface; a run then
    also shares it, and ``arrival_index`` holds it while the handler runs.
    """

    def __init__(
        self,
        sock: SocketLike,
        *,
        gro: bool = True,
        multi: bool = True,
        slots: int = 32,
        watch_load: bool = True,
        arrival: bool = False,
    ) -> None:
        sock = self.sock = os_socket(sock)
        self.watch_load = watch_load
        self.arrival = arrival
        self.arrival_index: int | None = None
        self.gro = gro and enable_gro(sock)
        self._buffer = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buffer)
        self._multi = MultiReceive(sock, slots=slots) if multi and mmsg.available() else None
        if self._multi is not None:
            # Batches carry source and segment size only: per-datagram destination, TTL and
            # drop counts would cost a control-message parse each (drops: kernel_drops()).
            quiet_control_messages(sock)
        if arrival:
            _want_arrival(sock)
        self._multi_view = memoryview(self._multi.buffer) if self._multi is not None else self._view
        self.counters: Counter[str] = Counter()
        self.fill = 0  # percent of the receive buffer in use when the last drain began

    def receive_runs(self, handle: RunHandler, limit: int = 256) -> int:
        """Hand what is queued to ``handle`` without copying: ``buffer`` holds the datagrams
        at ``spans`` (start, end), all from ``source``. GRO-coalesced receives are split by
        their segment size; with ``recvmmsg``, consecutive datagrams from one source come in
        one call. The buffer is overwritten by the next receive. Returns the datagrams
        handed over, up to about ``limit``."""
        if self._multi is not None:
            return self._receive_multi(handle, limit)
        count = 0
        queued_drops = self.kernel_drops() if self.watch_load else None
        while count < limit and (got := self._receive_one()) is not None:
            size, ancillary, address = got
            segment, drops = self._control(ancillary, size)
            if drops is None:  # no drop counter in the control messages
                drops = queued_drops
            spans = [(o, min(o + segment, size)) for o in range(0, size, segment)]
            count += len(spans)
            if self.arrival:
                self.arrival_index = _arrival_index(ancillary)
            handle(self._view, spans, address, drops)
        self.counters["datagrams"] += count
        return count

    def _receive_multi(self, handle: RunHandler, limit: int) -> int:
        multi = self._multi
        assert multi is not None
        count = 0
        before = self.counters["datagrams"]
        drops = self.kernel_drops() if self.watch_load else None
        while count < limit:
            received = multi.receive()
            if not received:
                break
            spans: list[tuple[int, int]] = []
            raw = b""
            source = ("", 0)
            names, name_size, slot_size = multi.names, mmsg.NAME_SIZE, multi.slot_size
            arrival = self.arrival
            for index, (_, control, flags, size) in enumerate(multi.results(received)):
                if flags & _MSG_TRUNC:
                    self.counters["truncated"] += 1
                    continue
                at = index * name_size
                ancillary = multi.control(index) if control else []
                where = _arrival_index(ancillary) if arrival else None
                # The same sender as the datagram before (the usual case): compared in place.
                same = raw and names.find(raw, at, at + len(raw)) == at
                if not same or where != self.arrival_index:
                    if spans:
                        self.counters["datagrams"] += len(spans)
                        handle(self._multi_view, spans, source, drops)
                        spans = []
                    raw, source = multi.raw_source(index), multi.source(index)
                    self.arrival_index = where
                base = index * slot_size
                # Without ``arrival`` only GRO adds a control message: none means one datagram.
                segment = self._control(ancillary, size)[0] if control else size
                if segment >= size:
                    spans.append((base, base + size))
                else:
                    spans.extend(
                        (base + o, base + min(o + segment, size)) for o in range(0, size, segment)
                    )
            if spans:
                self.counters["datagrams"] += len(spans)
                handle(self._multi_view, spans, source, drops)
            count = self.counters["datagrams"] - before  # a GRO slot holds many datagrams
            multi.finish()
            if received < multi.slots:
                break
        return count

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on this socket so far (``SO_MEMINFO``), or None.
        Also updates ``fill``: the share of the receive buffer in use, in percent."""
        load = queue_load(self.sock)
        if load is None:
            return None
        self.fill = load.fill
        return load.drops

    def _control(
        self, ancillary: list[tuple[int, int, bytes]], size: int
    ) -> tuple[int, int | None]:
        """The GRO segment size (``size`` when not coalesced) and the kernel drop count."""
        segment, drops = size, None
        for level, kind, payload in ancillary:
            if level == SOL_UDP and kind == UDP_GRO and len(payload) >= _GRO_SIZE.size:
                segment = _GRO_SIZE.unpack_from(payload)[0] or size
            elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(payload) >= 4:
                drops = _DROPS.unpack_from(payload)[0]
        if segment < size:
            self.counters["coalesced"] += 1
        return max(1, segment), drops

    def receive(self, limit: int = 256) -> list[Packet]:
        """Up to about ``limit`` datagrams already queued, as ``Packet``s with what the
        control messages say (the socket must be non-blocking)."""
        packets: list[Packet] = []
        view = self._view
        while len(packets) < limit and (got := self._receive_one()) is not None:
            size, ancillary, address = got
            segment = self._control(ancillary, size)[0]
            first = parse_ancillary(bytes(view[: min(segment, size)]), address, ancillary)
            packets.append(first)
            for offset in range(segment, size, segment):
                data = bytes(view[offset : min(offset + segment, size)])
                packets.append(
                    Packet(
                        data,
                        first.source,
                        first.source_port,
                        first.destination,
                        first.ifindex,
                        first.ttl,
                        first.drops,
                    )
                )
        self.counters["datagrams"] += len(packets)
        return packets

    def _receive_one(self) -> tuple[int, list[tuple[int, int, bytes]], tuple[str, int]] | None:
        """One receive into the buffer: (size, control messages, source), or None when
        nothing is queued. A datagram too large for the buffer is counted and skipped."""
        while True:
            try:
                size, ancillary, flags, address = self.sock.recvmsg_into(
                    [self._buffer], CMSG_BUFSIZE
                )
            except (BlockingIOError, InterruptedError):
                return None
            if flags & _MSG_TRUNC:
                self.counters["truncated"] += 1
                continue
            return size, ancillary, zoned(address)


def _want_arrival(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)


def _arrival_index(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The arrival interface index in IP_PKTINFO / IPV6_PKTINFO, or None."""
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            return int(_IFINDEX.unpack_from(payload, 0)[0])
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            return int(_IFINDEX.unpack_from(payload, 16)[0])
    return None
