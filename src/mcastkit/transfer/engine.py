"""Sender and receiver state machines for file distribution (see protocol.py), with no I/O.

Both take datagrams and the time, and return datagrams to send. File access goes through a
source (sender) or a storage that opens a sink (receiver; transfer/storage.py has files on
disk and in memory), so the engines never touch a file and their tests run on memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..addr import format_endpoint
from ..events import (
    PhaseChanged,
    ReceiverFinished,
    ReceiverRegistered,
    ReceiveState,
    SendPhase,
    TransferAnnounced,
    TransferEvent,
    TransferFinished,
)
from .protocol import (
    ABORT,
    ANNOUNCE,
    COMPLETE,
    DATA,
    DATA_HEAD,
    DONE_ACK,
    MAX_RANGES,
    PASS,
    PROGRESS,
    PROGRESS_BODY,
    PROGRESS_REQ,
    RECEIVER,
    REG_ACK,
    REGISTER,
    STATUS,
    STATUS_REQ,
    FileInfo,
    decode_announce,
    decode_ranges,
    decode_untrusted,
    encode_announce,
    encode_ranges,
    head,
    missing_ranges,
    safe_name,
)
from .states import RECEIVE_TRANSITIONS, SEND_TRANSITIONS, advance

Address = tuple[str, int]
Out = list[tuple[bytes, Address | None]]
SENDER_SILENCE = 15.0  # a receiver gives up after this long without a word from its sender
DEFAULT_MAX_SIZE = 16 << 30  # bytes one transfer may announce before the receiver refuses it
MIN_BITMAP_LIMIT = 1 << 24  # blocks (a byte each) accepted at least; more as --max-size grows
STATUS_CHUNKS = 32  # STATUS datagrams per request: up to 3,200 missing ranges per round


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
    drops: int = 0  # the receiver's kernel drop counter, from its last PROGRESS

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "id": f"{self.receiver_id:016x}",
            "name": self.name,
            "address": format_endpoint(*self.address),
            "complete": self.complete,
            "failed": self.failed,
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
        status_interval: float = 0.2,
    ) -> None:
        self.session = session
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
        self.started = now
        self.register_until = now + register_wait
        self.register_wait = register_wait
        self._late_until = 0.0
        self.receiver_timeout = receiver_timeout
        self.deadline = None if deadline is None else now + deadline
        self.status_interval = status_interval
        self.announce = encode_announce(session, files, block_size)
        self._next_announce = now
        self._next_status = 0.0
        self._status_since = 0.0
        self._queue: deque[list[int]] = deque()  # [file, next block, blocks left]
        self.total_blocks = sum(f.blocks(block_size) for f in files)

    # --- inputs --------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> Out:
        """A receiver's datagram (never raises on malformed input)."""
        message = decode_untrusted(data)
        if message is None or message.session != self.session:
            return []
        body = message.body
        if message.kind == REGISTER and len(body) >= RECEIVER.size:
            (receiver,) = RECEIVER.unpack_from(body)
            name = body[RECEIVER.size :].decode("utf-8", "replace")[:64] or f"{receiver:x}"
            if self.phase == SendPhase.DONE:
                return []
            if self.names is not None and name not in self.names:
                return []
            state = self.receivers.get(receiver)
            if state is None:
                self.receivers[receiver] = ReceiverState(receiver, name, source, now)
                self._events.append(ReceiverRegistered(self.session, receiver, name, source))
            else:
                state.last_heard = now
            return [(head(REG_ACK, self.session) + RECEIVER.pack(receiver), source)]
        if message.kind == STATUS:
            decoded = decode_ranges(body)
            if decoded is None:
                return []
            receiver, pass_number, ranges = decoded
            state = self.receivers.get(receiver)
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
            receiver, _received, drops = PROGRESS_BODY.unpack_from(body)
            state = self.receivers.get(receiver)
            if state is not None:
                state.last_heard = now
                state.drops = drops
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
            for state in self._active():
                state.failed = "deadline passed"
                self._finished(state)
            self._set_phase(SendPhase.DONE)
            return [(head(ABORT, self.session), None)]
        if now >= self._next_announce:
            # Keep announcing during the transfer too: late joiners need the file list.
            out.append((self.announce, None))
            self._next_announce = now + (0.2 if self.phase == SendPhase.REGISTER else 0.5)
        if self.phase == SendPhase.REGISTER:
            enough = self.expected is not None and len(self.receivers) >= self.expected
            if enough or now >= self.register_until:
                self._start_pass(
                    [(i, 0, f.blocks(self.block_size)) for i, f in enumerate(self.files) if f.size]
                )
        elif self.phase == SendPhase.STATUS:
            out.extend(self._status_round(now))
        return out

    def events(self) -> list[TransferEvent]:
        """What happened since the last call: phases, registrations, receivers finished."""
        events, self._events = self._events, []
        return events

    def progress_request(self) -> Out:
        """Ask the receivers how they keep up (for the adaptive rate)."""
        return [(head(PROGRESS_REQ, self.session), None)]

    def receiver_drops(self) -> dict[int, int]:
        """Each active receiver's kernel drop counter as last reported."""
        return {r.receiver_id: r.drops for r in self._active()}

    def next_blocks(self, budget: int) -> Out:
        """Up to ``budget`` data blocks of the current pass."""
        out: Out = []
        while budget > 0 and self._queue:
            item = self._queue[0]
            file_index, block, left = item
            data = self.source.read(file_index, block * self.block_size, self.block_size)
            out.append((head(DATA, self.session) + DATA_HEAD.pack(file_index, block) + data, None))
            budget -= 1
            self.blocks_sent += 1
            if left == 1:
                self._queue.popleft()
            else:
                item[1], item[2] = block + 1, left - 1
        if not self._queue and self.phase == SendPhase.DATA:
            self._set_phase(SendPhase.STATUS)
            self._status_since = 0.0
            self._next_status = 0.0
        return out

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

    def _start_pass(self, ranges: list[tuple[int, int, int]]) -> None:
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
            return [(head(STATUS_REQ, self.session) + PASS.pack(self.pass_number), None)]
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
            "seconds": round(now - self.started, 3),
            "receivers": [r.to_dict() for r in self.receivers.values()],
        }


class Sink(Protocol):
    """Where a receiver's blocks go (transfer/storage.py: files; or memory)."""

    def write(self, file_index: int, offset: int, data: bytes) -> None: ...

    def finish(self) -> str | None:
        """Verify every file and make it final; the reason when one fails."""
        ...

    def discard(self) -> None:
        """Forget everything written (nothing wrong is left behind)."""
        ...


class Storage(Protocol):
    """Opens a sink for an announced file list; raises OSError or ValueError to refuse it
    (no space, a name it will not write, a file it will not replace)."""

    def open(self, files: list[FileInfo]) -> Sink: ...


class ReceiveSession:
    """The receiver: find an announce, register, write blocks, report, verify."""

    def __init__(
        self,
        receiver_id: int,
        name: str,
        storage: Storage,
        *,
        now: float,
        session: int | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.max_size = max_size
        self.receiver_id = receiver_id
        self.name = name
        self.storage = storage
        self.session = session
        self.sender: Address | None = None
        self.files: list[FileInfo] = []
        self.block_size = 0
        self.sink: Sink | None = None
        self.bitmaps: list[bytearray] = []
        self.received = 0
        self.duplicates = 0
        self.total_blocks = 0
        self.state = ReceiveState.WAITING
        self.acknowledged = False  # the sender confirmed our COMPLETE (ok or failed)
        self.reason: str | None = None
        self._events: list[TransferEvent] = []
        self.registered = False
        self.kernel_drops = 0  # set by the runtime from SO_RXQ_OVFL
        self.last_heard = now
        self._last_pass = 0
        self._verify_due = False
        self._next_register = now
        self._complete_message: bytes | None = None

    def receive(self, data: bytes, source: Address, now: float) -> Out:
        """One datagram from the group or the sender (never raises on malformed input)."""
        message = decode_untrusted(data)
        if message is None:
            return []
        if self.session is not None and message.session != self.session:
            return []
        kind, body = message.kind, message.body
        if kind == ANNOUNCE and self.state == ReceiveState.WAITING:
            return self._on_announce(message.session, body, source, now)
        if self.session is None or self.state == ReceiveState.WAITING:
            return []
        if message.session == self.session:
            self.last_heard = now
        if kind == DATA and self.state == ReceiveState.RECEIVING and len(body) >= DATA_HEAD.size:
            return self._on_data(body)
        if kind == REG_ACK and body[: RECEIVER.size] == RECEIVER.pack(self.receiver_id):
            self.registered = True
            return []
        if kind == STATUS_REQ and len(body) >= PASS.size:
            (pass_number,) = PASS.unpack_from(body)
            self._last_pass = pass_number
            return self._status(pass_number)
        if kind == PROGRESS_REQ and self.state == ReceiveState.RECEIVING:
            report = PROGRESS_BODY.pack(
                self.receiver_id, self.received, self.kernel_drops & 0xFFFFFFFF
            )
            return [(head(PROGRESS, self.session) + report, self.sender)]
        if kind == DONE_ACK and body[: RECEIVER.size] == RECEIVER.pack(self.receiver_id):
            if self.state in (ReceiveState.COMPLETE, ReceiveState.FAILED):
                self.acknowledged = True
            return []
        if kind == ABORT and self.state == ReceiveState.RECEIVING:
            self._fail("the sender gave up (deadline)")
        return []

    def tick(self, now: float) -> Out:
        """Verify once every block is in; keep registering; give up on a silent sender."""
        if self._verify_due:
            # Verification (fsync, sha256) can take seconds: the sender was told first.
            self._verify_due = False
            if self.state == ReceiveState.RECEIVING:  # not failed meanwhile (an ABORT)
                self._verify()
            return [(self._complete_message, self.sender)] if self._complete_message else []
        if self.state == ReceiveState.RECEIVING and now - self.last_heard > SENDER_SILENCE:
            self._fail(f"the sender went silent for {SENDER_SILENCE:.0f}s")
            return [(self._complete_message, self.sender)] if self._complete_message else []
        receiving = self.state == ReceiveState.RECEIVING
        if receiving and not self.registered and now >= self._next_register:
            self._next_register = now + 0.2
            return [(self._register(), self.sender)]
        return []

    @property
    def finished(self) -> bool:
        """Done (complete or failed) and the sender has acknowledged, or nothing to wait for."""
        return self.acknowledged

    def events(self) -> list[TransferEvent]:
        """What happened since the last call: the announce taken, the outcome."""
        events, self._events = self._events, []
        return events

    def _set_state(self, state: ReceiveState) -> None:
        self.state = advance(RECEIVE_TRANSITIONS, self.state, state)
        if state in (ReceiveState.COMPLETE, ReceiveState.FAILED) and self.session is not None:
            self._events.append(TransferFinished(self.session, state, self.reason))

    def _register(self) -> bytes:
        assert self.session is not None
        return (
            head(REGISTER, self.session) + RECEIVER.pack(self.receiver_id) + self.name.encode()[:64]
        )

    def _on_announce(self, session: int, body: bytes, source: Address, now: float) -> Out:
        decoded = decode_announce(body)
        if decoded is None:
            return []
        files, block_size = decoded
        total = sum(f.size for f in files)
        problem = None
        blocks = sum(f.blocks(block_size) for f in files)
        if total > self.max_size:
            problem = (
                f"the transfer is {total:,} bytes, over the {self.max_size:,}-byte limit "
                "(raise --max-size to accept it)"
            )
        elif blocks > max(MIN_BITMAP_LIMIT, self.max_size // 1024):
            problem = f"{blocks:,} blocks of {block_size} bytes: blocks this small are refused"
        if problem is None:
            try:
                for info in files:
                    safe_name(info.name)
                self.sink = self.storage.open(files)
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                problem = f"cannot prepare files: {where}{exc.strerror}"
            except (ValueError, OverflowError) as exc:
                problem = f"cannot prepare files: {exc}"
        announced = TransferAnnounced(session, source, tuple(f.name for f in files), total)
        if problem is not None:
            # Refused before a byte is written; the sender is told why (register, then fail).
            self.session, self.sender = session, source
            self._events.append(announced)
            self._fail(problem)
            assert self._complete_message is not None
            return [(self._register(), source), (self._complete_message, source)]
        self.session, self.sender, self.files, self.block_size = session, source, files, block_size
        self.bitmaps = [bytearray(f.blocks(block_size)) for f in files]
        self.total_blocks = sum(len(b) for b in self.bitmaps)
        self._events.append(announced)
        self._set_state(ReceiveState.RECEIVING)
        self._next_register = now + 0.2
        if self.total_blocks == 0:
            self._verify_due = True
        return [(self._register(), source)]

    def _on_data(self, body: bytes) -> Out:
        file_index, block = DATA_HEAD.unpack_from(body)
        if file_index >= len(self.bitmaps) or block >= len(self.bitmaps[file_index]):
            return []
        bitmap = self.bitmaps[file_index]
        if bitmap[block]:
            self.duplicates += 1
            return []
        payload = body[DATA_HEAD.size :]
        info = self.files[file_index]
        expected = min(self.block_size, info.size - block * self.block_size)
        if len(payload) != expected:
            return []
        assert self.sink is not None
        try:
            self.sink.write(file_index, block * self.block_size, payload)
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror}")
            return [(self._complete_message, self.sender)] if self._complete_message else []
        bitmap[block] = 1
        self.received += 1
        if self.received == self.total_blocks:
            self._verify_due = True
            return self._status(self._last_pass)  # "nothing missing": keeps the sender patient
        return []

    def _verify(self) -> None:
        assert self.sink is not None and self.session is not None
        try:
            problem = self.sink.finish()
        except OSError as exc:
            self.sink.discard()
            problem = f"could not finish: {exc.strerror}"
        if problem:
            self._fail(problem)
            return
        self._complete_message = (
            head(COMPLETE, self.session) + RECEIVER.pack(self.receiver_id) + b"\x00"
        )
        self._set_state(ReceiveState.COMPLETE)

    def _fail(self, reason: str) -> None:
        if self.sink is not None:
            self.sink.discard()
        self.reason = reason
        if self.session is not None:
            self._complete_message = (
                head(COMPLETE, self.session)
                + RECEIVER.pack(self.receiver_id)
                + b"\x01"
                + reason.encode()[:200]
            )
        self._set_state(ReceiveState.FAILED)

    def _status(self, pass_number: int) -> Out:
        if self.state in (ReceiveState.COMPLETE, ReceiveState.FAILED):
            if self._complete_message is None or self.acknowledged:
                return []
            return [(self._complete_message, self.sender)]
        assert self.session is not None
        ranges: list[tuple[int, int, int]] = []
        for index, bitmap in enumerate(self.bitmaps):
            ranges.extend(missing_ranges(bitmap, index))
            if len(ranges) >= MAX_RANGES * STATUS_CHUNKS:
                break
        chunks = [ranges[i : i + MAX_RANGES] for i in range(0, len(ranges), MAX_RANGES)] or [[]]
        return [
            (encode_ranges(self.session, self.receiver_id, pass_number, chunk), self.sender)
            for chunk in chunks[:STATUS_CHUNKS]
        ]

    def summary(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "session": None if self.session is None else f"{self.session:016x}",
            "state": self.state.value,
            "reason": self.reason,
            "files": [f.name for f in self.files],
            "bytes": sum(f.size for f in self.files),
            "blocks": self.total_blocks,
            "received": self.received,
            "duplicates": self.duplicates,
        }
