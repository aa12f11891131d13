"""The file sender's state machine, with no I/O: registration, passes, status rounds,
repair. Blocks are read through a ``BlockSource``; datagrams and the time come in, datagrams
and ``TransferEvent``s go out."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..addr import format_endpoint
from ..events import (
    PhaseChanged,
    ReceiverFinished,
    ReceiverRegistered,
    SendPhase,
    TransferEvent,
)
from ..peers import Address
from .protocol import (
    ABORT,
    COMPLETE,
    DATA,
    DATA_HEADER,
    DONE_ACK,
    MAGIC,
    MISSING_MAP,
    PASS,
    PREPASS,
    PROGRESS,
    PROGRESS_BODY,
    PROGRESS_REQ,
    RECEIVER,
    REG_ACK,
    REGISTER,
    RESUMING,
    STATUS,
    STATUS_REQ,
    Buffer,
    FileInfo,
    Out,
    decode_missing_map,
    decode_ranges,
    decode_untrusted,
    encode_announces,
    head,
    missing_ranges,
)
from .rate import Load
from .states import SEND_TRANSITIONS, advance

NO_REPORT = Load(0, None, 0, None)  # a receiver's load before its first PROGRESS
ANNOUNCE_REUSE = 1.0  # seconds an encoded (stamped, signed) announce is sent again as is
RESUME_HOLD = 2.0  # seconds pass 0 waits, once the digests are out, for resuming receivers
UNICAST_REQUEST_LIMIT = 32  # receivers asked one by one; more are asked on the group


class BlockSource(Protocol):
    """Where the sender reads blocks."""

    def read(self, file_index: int, offset: int, size: int) -> bytes: ...


@dataclass
class ReceiverState:
    """What the sender knows about one receiver."""

    receiver_id: int
    name: str
    address: Address
    last_heard: float
    status_pass: int = -1
    missing: list[tuple[int, int, int]] = field(default_factory=list)
    complete: bool = False
    failed: str | None = None
    # Its last PROGRESS: kernel drops, buffer fill (if it says), blocks held, when it came.
    load: Load = NO_REPORT
    resuming: bool = False  # it holds part of the files from an earlier transfer
    lacks: list[tuple[int, int, int]] | None = None  # what it said it lacks, before pass 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "id": f"{self.receiver_id:016x}",
            "name": self.name,
            "address": format_endpoint(*self.address),
            "complete": self.complete,
            "failed": self.failed,
            "resumed": self.lacks is not None,
        }


class SendSession:
    """The sender: registration, passes, status rounds, repair."""

    def __init__(
        self,
        session: int,
        files: list[FileInfo],
        source: BlockSource,
        *,
        now: float,
        block_size: int,
        expected: int | None = None,
        names: set[str] | None = None,
        register_wait: float = 2.0,
        receiver_timeout: float = 10.0,
        deadline: float | None = None,
        status_interval: float = 0.1,
        wall_clock: Callable[[], float] | None = None,
        sign: Callable[[bytes], bytes] | None = None,
        sync: bool = False,
    ) -> None:
        self.session = session
        self._wall_clock = wall_clock  # stamps each announce (receivers refuse stale ones)
        self._sign = sign  # appends a signature to each announce (transfer/trust.py)
        self.files = files
        self.source = source
        self.block_size = block_size
        self.expected = expected
        self.names = names
        self.receivers: dict[int, ReceiverState] = {}
        self.phase = SendPhase.REGISTER
        self._events: list[TransferEvent] = []
        self.pass_number = 0
        self.blocks_sent = 0
        self.first_pass_blocks = 0  # blocks the first pass sends (all, unless some are held)
        self.started = now
        self.register_until = now + register_wait
        self.register_wait = register_wait
        self._late_until = 0.0
        self.receiver_timeout = receiver_timeout
        self.deadline = None if deadline is None else now + deadline
        self.status_interval = status_interval
        self.sync = sync  # receivers keep files they hold with the same sha256
        encode_announces(session, files, block_size)  # ValueError now if the list is too long
        self._next_announce = now
        self._announce_cache: tuple[float, list[bytes]] | None = None
        self._digests_out = 0.0  # when the digests were known (for resuming receivers)
        self._next_status = 0.0
        self._status_since = 0.0
        self._queue: deque[list[int]] = deque()  # [file, next block, blocks left]
        self.total_blocks = sum(f.blocks(block_size) for f in files)
        self._out: Out = []  # for ``datagrams_to_send``
        self._stirred = True  # input since ``tick`` last ran: it looks at once

    # --- the core contract (core.Core) ---------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """A receiver's datagram: answers are queued, ``tick`` looks at what changed."""
        self._out.extend(self.receive(data, source, now))
        self._stirred = True

    def handle_timer(self, now: float) -> None:
        """Announces, phase changes, status rounds and timeouts due by ``now``."""
        self._stirred = False
        self._out.extend(self.tick(now))

    def datagrams_to_send(self, now: float) -> Out:
        """What to send now (None as destination: the group); data blocks come from
        ``next_block_parts`` at the runtime's rate."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> TransferEvent | None:
        return self._events.pop(0) if self._events else None

    def next_timer(self) -> float | None:
        """When ``tick`` has something to do: the next announce, the deadline, the end of
        registration, the next status request or a receiver's timeout (0: at once, after
        input or a phase change). None: done."""
        if self.phase == SendPhase.DONE:
            return None
        if self._stirred:
            return 0.0
        due = [self._next_announce]
        if self.deadline is not None:
            due.append(self.deadline)
        if self.phase == SendPhase.REGISTER:
            due.append(self._registered_by())
        elif self.phase == SendPhase.STATUS:
            active = self._active()
            if active:  # the next request, and a receiver silent for longer than its timeout
                due.append(self._next_status)
                due.extend(r.last_heard + self.receiver_timeout + 1e-6 for r in active)
            else:  # the wait for an expected receiver still on its way
                due.append(self._late_until)
        return min(due)

    def _registered_by(self) -> float:
        """When registration may end: its wait (at once with every expected receiver in),
        held for resuming receivers (until the digests are out, then RESUME_HOLD)."""
        enough = self.expected is not None and len(self.receivers) >= self.expected
        ends = 0.0 if enough else self.register_until
        if any(r.resuming and r.lacks is None for r in self._active()):
            if any(f.digest_pending for f in self.files):
                return float("inf")  # ``set_digests`` brings it forward
            if self._digests_out:
                ends = max(ends, self._digests_out + RESUME_HOLD)
        return ends

    # --- inputs --------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> Out:
        """A receiver's datagram (never raises on malformed input)."""
        message = decode_untrusted(data)
        if message is None or message.session != self.session:
            return []
        body = message.body
        if message.kind == REGISTER and len(body) >= RECEIVER.size:
            (receiver,) = RECEIVER.unpack_from(body)
            raw_name, _, flags = body[RECEIVER.size :].partition(b"\x00")
            name = raw_name.decode("utf-8", "replace")[:64] or f"{receiver:x}"
            if self.phase == SendPhase.DONE:
                return []
            if self.names is not None and name not in self.names:
                return []
            state = self.receivers.get(receiver)
            if state is None:
                state = self.receivers[receiver] = ReceiverState(receiver, name, source, now)
                state.resuming = bool(flags[:1]) and bool(flags[0] & RESUMING)
                self._events.append(ReceiverRegistered(self.session, receiver, name, source))
            else:
                state.last_heard = now
            return [(head(REG_ACK, self.session) + RECEIVER.pack(receiver), source)]
        if message.kind in (STATUS, MISSING_MAP):
            decoded = decode_ranges(body) if message.kind == STATUS else decode_missing_map(body)
            if decoded is None:
                return []
            receiver, pass_number, ranges = decoded
            state = self.receivers.get(receiver)
            if pass_number == PREPASS:  # what a resuming receiver lacks: for pass 0 only
                if state is not None and self.phase == SendPhase.REGISTER:
                    state.last_heard = now
                    state.lacks = (state.lacks or []) + list(ranges)
                return []
            if state is not None and not state.complete and state.failed is None:
                state.last_heard = now
                # A long list comes in several datagrams for one pass: gather them.
                if pass_number > state.status_pass:
                    state.status_pass = pass_number
                    state.missing = list(ranges)
                elif pass_number == state.status_pass:
                    state.missing.extend(ranges)
            return []
        if message.kind == PROGRESS and len(body) >= PROGRESS_BODY.size:
            receiver, received, drops = PROGRESS_BODY.unpack_from(body)
            state = self.receivers.get(receiver)
            if state is not None:
                state.last_heard = now
                fill = state.load.fill
                if len(body) > PROGRESS_BODY.size:
                    fill = min(100, body[PROGRESS_BODY.size])
                state.load = Load(drops, fill, received, now)
            return []
        if message.kind == COMPLETE and len(body) >= RECEIVER.size + 1:
            (receiver,) = RECEIVER.unpack_from(body)
            state = self.receivers.get(receiver)
            if state is None:
                return []
            state.last_heard = now
            if not state.complete and state.failed is None:
                if body[RECEIVER.size] == 0:
                    state.complete = True
                else:
                    reason = body[RECEIVER.size + 1 :].decode("utf-8", "replace")[:200] or "?"
                    state.failed = reason
                self._finished(state)
            return [(head(DONE_ACK, self.session) + RECEIVER.pack(receiver), source)]
        return []

    def tick(self, now: float) -> Out:
        """Announces, phase changes, status rounds, timeouts."""
        out: Out = []
        if self.phase == SendPhase.DONE:
            return out
        if self.deadline is not None and now >= self.deadline:
            return self.abort("deadline passed")
        if now >= self._next_announce:
            # Keep announcing during the transfer too: late joiners need the file list.
            datagrams = self.announces()
            out.extend((datagram, None) for datagram in datagrams)
            # A long list in many parts goes round less often: at most ~1,000 parts a second.
            every = 0.2 if self.phase == SendPhase.REGISTER else 0.5
            self._next_announce = now + max(every, len(datagrams) / 1000)
        if self.phase == SendPhase.REGISTER:
            enough = self.expected is not None and len(self.receivers) >= self.expected
            if (enough or now >= self.register_until) and not self._hold_for_resume(now):
                self._start_pass(self._first_pass())
        elif self.phase == SendPhase.STATUS:
            out.extend(self._status_round(now))
        return out

    def events(self) -> list[TransferEvent]:
        """What happened since the last call: phases, registrations, receivers finished."""
        events, self._events = self._events, []
        return events

    def abort(self, reason: str) -> Out:
        """Give up: every receiver still at work fails for ``reason``, and is told."""
        for state in self._active():
            state.failed = reason
            self._finished(state)
        self._set_phase(SendPhase.DONE)
        return [(head(ABORT, self.session), None)]

    def set_digests(self, digests: list[str]) -> None:
        """The files' sha256, once hashed (announced with ``PENDING_DIGEST`` until then): the
        next announce, sent at once, carries them."""
        self.files = [
            info.with_digest(digest) for info, digest in zip(self.files, digests, strict=True)
        ]
        self._next_announce = 0.0
        self._announce_cache = None
        self._stirred = True

    def announces(self) -> list[bytes]:
        """The announce (its parts, for a long list) as it goes out now: stamped and signed
        when so configured."""
        sent_at = None if self._wall_clock is None else self._wall_clock()
        cached = self._announce_cache
        # Stamps need only be fresh within the receivers' skew (30 s): encoding and signing
        # thousands of parts each round would cost more than the transfer.
        if cached is not None and (sent_at is None or sent_at - cached[0] < ANNOUNCE_REUSE):
            return cached[1]
        datagrams = encode_announces(
            self.session, self.files, self.block_size, sent_at=sent_at, sync=self.sync
        )
        if self._sign is not None:
            datagrams = [self._sign(d) for d in datagrams]
        self._announce_cache = (sent_at or 0.0, datagrams)
        return datagrams

    def progress_request(self) -> Out:
        """Ask the receivers how they keep up (for the adaptive rate). Each is asked on its
        own address while there are few: a request on the group waits in the receiver's
        queue behind the data, which would delay the answer by the very backlog it reports."""
        return self._to_each(head(PROGRESS_REQ, self.session))

    def _to_each(self, request: bytes) -> Out:
        """A request to every active receiver: on its own address while there are few (it
        is not lost with the data, nor queued behind it), on the group beyond that."""
        active = self._active()
        if len(active) > UNICAST_REQUEST_LIMIT:
            return [(request, None)]
        return [(request, r.address) for r in active]

    def receiver_loads(self) -> dict[int, Load]:
        """Each active receiver's last progress report: drops, fill, blocks held, when."""
        return {r.receiver_id: r.load for r in self._active()}

    def next_blocks(self, budget: int) -> Out:
        """Up to ``budget`` data blocks of the current pass, as whole datagrams."""
        return [
            (header + bytes(payload), None) for header, payload in self.next_block_parts(budget)
        ]

    def next_block_parts(self, budget: int) -> list[tuple[bytes, Buffer]]:
        """Up to ``budget`` data blocks of the current pass, each as (header, payload), for
        the group. The blocks of a run are read in one call and sent without being joined."""
        parts: list[tuple[bytes, Buffer]] = []
        size = self.block_size
        while budget > 0 and self._queue:
            item = self._queue[0]
            file_index, block, left = item
            count = min(left, budget)
            chunk = memoryview(self.source.read(file_index, block * size, count * size))
            for index in range(count):
                header = DATA_HEADER.pack(MAGIC, DATA, self.session, file_index, block + index)
                parts.append((header, chunk[index * size : (index + 1) * size]))
            budget -= count
            self.blocks_sent += count
            if left == count:
                self._queue.popleft()
            else:
                item[1], item[2] = block + count, left - count
        if not self._queue and self.phase == SendPhase.DATA:
            self._set_phase(SendPhase.STATUS)
            self._status_since = 0.0
            self._next_status = 0.0
        return parts

    # --- internals -----------------------------------------------------------------------

    def _active(self) -> list[ReceiverState]:
        return [r for r in self.receivers.values() if not r.complete and r.failed is None]

    def _set_phase(self, phase: SendPhase) -> None:
        if phase != self.phase:
            self.phase = advance(SEND_TRANSITIONS, self.phase, phase)
            self._events.append(PhaseChanged(self.session, phase, self.pass_number))

    def _finished(self, state: ReceiverState) -> None:
        self._events.append(
            ReceiverFinished(
                self.session, state.receiver_id, state.name, state.complete, state.failed
            )
        )

    def _hold_for_resume(self, now: float) -> bool:
        """Whether pass 0 waits for resuming receivers to say what they hold: they can once
        they have the sha256 (to check their partial is of this content), and get
        RESUME_HOLD seconds after it went out."""
        waiting = [r for r in self._active() if r.resuming and r.lacks is None]
        if not waiting:
            return False
        if any(f.digest_pending for f in self.files):
            return True
        self._digests_out = self._digests_out or now
        return now - self._digests_out < RESUME_HOLD

    def _first_pass(self) -> list[tuple[int, int, int]]:
        """Every block, unless every receiver still at work said what it lacks: then only
        those (a receiver that already completed, all its files in place, lacks nothing)."""
        everything = [(i, 0, f.blocks(self.block_size)) for i, f in enumerate(self.files) if f.size]
        if not self.receivers:
            return everything
        reports = [r.lacks for r in self._active()]
        if any(lacks is None for lacks in reports):
            return everything
        return self._union([lacks for lacks in reports if lacks is not None])

    def _start_pass(self, ranges: list[tuple[int, int, int]]) -> None:
        if self.pass_number == 0:  # what resumed and synced receivers did not need skipped
            self.first_pass_blocks = sum(count for _file, _first, count in ranges)
        self._queue = deque([list(r) for r in ranges])
        self._set_phase(SendPhase.DATA)

    def _status_round(self, now: float) -> Out:
        active = self._active()
        if not self._status_since:
            self._status_since = now
        for state in active:
            if now - state.last_heard > self.receiver_timeout:
                state.failed = "stopped answering"
                self._finished(state)
        active = self._active()
        waiting_for = [r for r in active if r.status_pass < self.pass_number]
        if not active:
            # Everyone registered is finished. An expected receiver may still be on its way:
            # keep announcing for one more registration wait before giving up on it.
            short = self.expected is not None and len(self.receivers) < self.expected
            if not short or (self._late_until and now >= self._late_until):
                self._set_phase(SendPhase.DONE)
                return []
            self._late_until = self._late_until or now + self.register_wait
            return []
        if not waiting_for and active:
            needed = self._union([r.missing for r in active])
            self.pass_number += 1
            if needed:
                self._start_pass(needed)
                return []
            # Everyone answered with nothing missing: they are verifying; ask again soon.
        if now >= self._next_status:
            self._next_status = now + self.status_interval
            return self._to_each(head(STATUS_REQ, self.session) + PASS.pack(self.pass_number))
        return []

    def _union(self, lists: list[list[tuple[int, int, int]]]) -> list[tuple[int, int, int]]:
        sizes = [f.blocks(self.block_size) for f in self.files]
        wanted = {
            index: bytearray(b"\x01" * sizes[index])
            for index in {r[0] for ranges in lists for r in ranges if r[0] < len(sizes)}
        }
        for ranges in lists:
            for file_index, first, count in ranges:
                if file_index in wanted and first < sizes[file_index]:
                    end = min(first + count, sizes[file_index])
                    wanted[file_index][first:end] = bytes(end - first)
        merged: list[tuple[int, int, int]] = []
        for file_index in sorted(wanted):
            merged.extend(missing_ranges(wanted[file_index], file_index))
        return merged

    def summary(self, now: float) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "session": f"{self.session:016x}",
            "passes": self.pass_number,
            "blocks": self.total_blocks,
            "blocks_sent": self.blocks_sent,
            "first_pass_blocks": self.first_pass_blocks,
            "seconds": round(now - self.started, 3),
            "receivers": [r.to_dict() for r in self.receivers.values()],
        }
