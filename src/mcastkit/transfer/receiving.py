"""The file receiver's state machine, with no I/O: find an announce, register, take blocks
(one datagram at a time, or a batch in place), report what is missing, verify. Files are
written through a sink that a ``Storage`` opens (transfer/storage.py: on disk, or memory)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ..events import (
    ReceiveState,
    TransferAnnounced,
    TransferEvent,
    TransferFinished,
)
from ..peers import Address
from .protocol import (
    ABORT,
    ANNOUNCE,
    COMPLETE,
    DATA,
    DATA_HEAD,
    DATA_HEADER,
    DONE_ACK,
    MAGIC,
    MAP_BLOCKS,
    MAX_RANGES,
    PASS,
    PREPASS,
    PROGRESS,
    PROGRESS_BODY,
    PROGRESS_REQ,
    RECEIVER,
    REG_ACK,
    REGISTER,
    RESUMING,
    STATUS_REQ,
    AnnounceParts,
    FileInfo,
    Out,
    TransferKind,
    check_tree,
    decode_announce,
    decode_untrusted,
    encode_missing_map,
    encode_ranges,
    head,
    missing_ranges,
)
from .sinks import Sink, Storage
from .states import RECEIVE_TRANSITIONS, advance

COPY_COOKIE = 8  # reach.COOKIE: the transfer core does not import the membership one

SENDER_SILENCE = 15.0  # a receiver gives up after this long without a word from its sender
DEFAULT_MAX_SIZE = 16 << 30  # bytes one transfer may announce before the receiver refuses it
MIN_BITMAP_LIMIT = 1 << 24  # blocks (a byte each) accepted at least; more as --max-size grows
MAX_RUN = 1024  # blocks per write call (IOV_MAX)
DENSE_RANGES = 4 * MAX_RANGES  # more missing ranges than this go as bitmaps (MISSING_MAP)
STATUS_CHUNKS = 32  # STATUS datagrams per request: up to 3,200 missing ranges per round
CHECKPOINT_EVERY = 0.5  # seconds between records of the blocks on disk (for resume)
MAX_REFETCHES = 3  # a file whose sha256 does not match is received again, this often at most


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
        check_announce: Callable[[int, bytes], str | None] | None = None,
        sync: bool = False,
    ) -> None:
        self.max_size = max_size
        # Signature and freshness (transfer/trust.py): the reason to refuse an announce.
        self._check_announce = check_announce
        self.refused: dict[str, int] = {}  # why announces were refused, and how often
        # Cookies senders gave us (reach.ReturnCookies): our asks for copies echo them.
        self.cookies: dict[Address, bytes] = {}
        self.refused_last: tuple[Address, str] | None = None
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
        self.refetches = 0  # rounds of files received again after a sha256 mismatch
        self.refetched_blocks = 0
        self.duplicates = 0
        self.total_blocks = 0
        self.state = ReceiveState.WAITING
        self.acknowledged = False  # the sender confirmed our COMPLETE (ok or failed)
        self.reason: str | None = None
        self._events: list[TransferEvent] = []
        self.registered = False
        self.kernel_drops = 0  # set by the runtime: the socket's drop counter
        self.queue_fill = 0  # set by the runtime: percent of the socket buffer in use
        self.last_heard = now
        self._last_pass = 0
        self._verify_due = False
        self._awaiting_digests = False
        self._next_register = now
        self._complete_message: bytes | None = None
        # Resume: blocks of earlier partials, kept until their sha256 is confirmed.
        self._candidates: dict[int, tuple[str, bytearray | None]] = {}
        self.resumed = 0  # blocks taken from a partial of an earlier transfer
        self.kept = 0  # blocks kept on disk for a later transfer to resume from
        self._report_due = False  # tell the sender what we hold before its first pass
        self._checkpointed = (0, -1.0)  # blocks received, when
        # Announce parts of long file lists, until one list is whole.
        self._parts = AnnounceParts()
        self.sync = sync  # skip files already here with the same sha256
        self.up_to_date: list[str] = []
        self._out: Out = []  # for ``datagrams_to_send``
        self._stirred = False  # input since ``tick`` last ran: it looks at once

    # --- the core contract (core.Core) ---------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """One datagram: answers are queued, ``tick`` looks at what changed."""
        self._out.extend(self.receive(data, source, now))
        self._stirred = True

    def receive_batch(
        self, buffer: memoryview, spans: list[tuple[int, int]], source: Address, now: float
    ) -> None:
        """``receive_many`` (a batch in place), its answers queued."""
        self._out.extend(self.receive_many(buffer, spans, source, now))
        self._stirred = True

    def handle_timer(self, now: float) -> None:
        """Verification, registration, reports, checkpoints and silence due by ``now``."""
        self._stirred = False
        self._out.extend(self.tick(now))

    def datagrams_to_send(self, now: float) -> Out:
        """What to send now: a receiver only ever answers its sender."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> TransferEvent | None:
        return self._events.pop(0) if self._events else None

    def next_timer(self) -> float | None:
        """When ``tick`` has something to do (0: at once); None: only input wakes it."""
        if self._stirred or self._verify_due:
            return 0.0
        if self.state != ReceiveState.RECEIVING:
            return None
        if self._report_due and self.registered:
            return 0.0
        due = [
            self.last_heard + SENDER_SILENCE + 1e-6,  # ``tick`` gives up after longer
            self._checkpointed[1] + CHECKPOINT_EVERY,
        ]
        if not self.registered:
            due.append(self._next_register)
        return min(due)

    def receive(self, data: bytes, source: Address, now: float) -> Out:
        """One datagram from the group or the sender (never raises on malformed input)."""
        message = decode_untrusted(data)
        if message is None:
            return []
        if message.kind == TransferKind.WANT_COPIES:  # a sender's challenge: a cookie to echo
            body = message.body
            if len(body) == COPY_COOKIE and (source in self.cookies or len(self.cookies) < 64):
                self.cookies[source] = bytes(body)
            return []
        if self.session is not None and message.session != self.session:
            return []
        kind, body = message.kind, message.body
        if kind == ANNOUNCE and self._refuse(message.session, body, source):
            return []
        if kind == ANNOUNCE and self.state == ReceiveState.WAITING:
            return self._on_announce(message.session, body, source, now)
        if kind == ANNOUNCE and message.session == self.session:
            self._learn_digests(body)
        if self.session is None or self.state == ReceiveState.WAITING:
            return []
        if message.session == self.session:
            self.last_heard = now
        if kind == DATA and self.state == ReceiveState.RECEIVING:
            if len(body) <= DATA_HEAD.size:
                return []  # no payload: never a block
            # One path for blocks, one datagram or a batch: receive_many's checks in place.
            return self.receive_many(memoryview(data), [(0, len(data))], source, now)
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
            ) + bytes([max(0, min(100, self.queue_fill))])
            return [(head(PROGRESS, self.session) + report, self.sender)]
        if kind == DONE_ACK and body[: RECEIVER.size] == RECEIVER.pack(self.receiver_id):
            if self.state in (ReceiveState.COMPLETE, ReceiveState.FAILED):
                self.acknowledged = True
            return []
        if kind == ABORT and self.state == ReceiveState.RECEIVING:
            self._fail("the sender gave up (deadline)", resumable=True)
        return []

    def _refuse(self, session: int, body: bytes, source: Address) -> bool:
        if self._check_announce is None:
            return False
        reason = self._check_announce(session, body)
        if reason is None:
            return False
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.refused_last = (source, reason)
        return True

    def receive_many(
        self, buffer: memoryview, spans: list[tuple[int, int]], source: Address, now: float
    ) -> Out:
        """Datagrams from one source at ``spans`` (start, end) of ``buffer`` (a GRO receive
        split by segment, or a ``recvmmsg`` batch). Data blocks are checked in place and runs
        of consecutive blocks written in one call; anything else goes through ``receive``."""
        out: Out = []
        receiving = self.state == ReceiveState.RECEIVING
        session, size = self.session, self.block_size
        bitmaps, files = self.bitmaps, self.files
        data_at = DATA_HEADER.size
        unpack = DATA_HEADER.unpack_from
        run: list[memoryview] = []
        run_file = run_next = run_offset = run_end = -1
        for offset, end in spans:
            length = end - offset - data_at
            if receiving and length > 0:
                magic, kind, sent_for, file_index, block = unpack(buffer, offset)
                if magic == MAGIC and kind == DATA and sent_for == session:
                    try:
                        bitmap = bitmaps[file_index]
                        if bitmap[block]:
                            self.duplicates += 1
                            continue
                    except IndexError:  # no such file or block: hostile or broken
                        continue
                    left = files[file_index].size - block * size
                    if length != (size if left >= size else left):
                        continue
                    if run and (file_index != run_file or block != run_next or block == run_end):
                        out.extend(self._write_run(run_file, run_offset, run))
                        run = []
                        if self.state != ReceiveState.RECEIVING:  # the write failed
                            receiving = False
                            continue
                    if not run:
                        run_file, run_offset, run_end = file_index, block * size, block + MAX_RUN
                    run.append(buffer[offset + data_at : end])
                    run_next = block + 1
                    bitmap[block] = 1
                    self.received += 1
                    continue
            if run:  # anything else, in order, through the one-datagram path
                out.extend(self._write_run(run_file, run_offset, run))
                run = []
            out.extend(self.receive(bytes(buffer[offset:end]), source, now))
            receiving = self.state == ReceiveState.RECEIVING
        if run:
            out.extend(self._write_run(run_file, run_offset, run))
        if self.session is not None and self.state == ReceiveState.RECEIVING:
            self.last_heard = now
            out.extend(self._if_complete())
        return out

    def _write_run(self, file_index: int, offset: int, blocks: list[memoryview]) -> Out:
        if self.state != ReceiveState.RECEIVING:
            return []
        assert self.sink is not None
        try:
            self.sink.write_run(file_index, offset, blocks)
        except OSError as exc:
            self._fail(f"write failed: {exc.strerror}", resumable=True)
            return [(self._complete_message, self.sender)] if self._complete_message else []
        return []

    def tick(self, now: float) -> Out:
        """Verify once every block is in; keep registering; give up on a silent sender."""
        if self._verify_due:
            # Verification (fsync, sha256) can take seconds: the sender was told first.
            self._verify_due = False
            if self.state == ReceiveState.RECEIVING:  # not failed meanwhile (an ABORT)
                if any(f.digest_pending for f in self.files):
                    self._awaiting_digests = True  # verified when the announce brings them
                    return []
                self._verify()
            return [(self._complete_message, self.sender)] if self._complete_message else []
        if self.state == ReceiveState.RECEIVING and now - self.last_heard > SENDER_SILENCE:
            self._fail(f"the sender went silent for {SENDER_SILENCE:.0f}s", resumable=True)
            return [(self._complete_message, self.sender)] if self._complete_message else []
        receiving = self.state == ReceiveState.RECEIVING
        if receiving and not self.registered and now >= self._next_register:
            self._next_register = now + 0.2
            return [(self._register(), self.sender)]
        if receiving and self._report_due and self.registered:
            self._report_due = False  # what we hold, so the first pass skips it
            return self._status(PREPASS)
        if receiving and now - self._checkpointed[1] >= CHECKPOINT_EVERY:
            if self.received != self._checkpointed[0]:
                self._checkpoint()
            self._checkpointed = (self.received, now)
        return []

    def _checkpoint(self) -> None:
        assert self.sink is not None
        with contextlib.suppress(OSError):  # a record not written costs a resume, no more
            self.sink.checkpoint(self.bitmaps, self.block_size)

    def _keep(self) -> None:
        assert self.sink is not None
        self._checkpoint()
        self.sink.keep()
        self.kept = self.received if not any(f.digest_pending for f in self.files) else 0

    def suspend(self) -> None:
        """Stop receiving (interrupted), keeping what a later transfer can resume from."""
        if self.sink is not None and self.state == ReceiveState.RECEIVING:
            self._keep()

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
        flags = b"\x00" + bytes([RESUMING]) if self._candidates or self.resumed else b""
        return (
            head(REGISTER, self.session)
            + RECEIVER.pack(self.receiver_id)
            + self.name.encode()[:64].replace(b"\x00", b"")
            + flags
        )

    def _on_announce(self, session: int, body: bytes, source: Address, now: float) -> Out:
        decoded = decode_announce(body)
        if decoded is None:
            return []
        if decoded.parts > 1:
            gathered = self._parts.gather(session, decoded, body)
            if gathered is None:
                return []  # more parts to come
            decoded.files = gathered
        files, block_size = decoded.files, decoded.block_size
        keep = self.sync or decoded.sync  # the sender may ask to keep; never to replace
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
                check_tree(files)
                self.sink = self.storage.open(files, sync=keep)
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
        assert self.sink is not None
        for index, (sha256, size, held) in self.sink.resumable().items():
            if held is None or (size == block_size and len(held) == len(self.bitmaps[index])):
                self._candidates[index] = (sha256, held)
        self._adopt()
        if self.total_blocks == 0:
            self._verify_due = True
        return [(self._register(), source)]

    def _adopt(self) -> None:
        """Take the blocks of each partial whose file's sha256 is now known to match (the
        same content); a partial of other content is left to be overwritten."""
        for index in [i for i in self._candidates if not self.files[i].digest_pending]:
            sha256, held = self._candidates.pop(index)
            self._report_due = True  # the sender waits for our word either way
            if sha256 != self.files[index].sha256:
                continue
            bitmap = self.bitmaps[index]
            before = bitmap.count(1)
            if held is None:  # already in place (sync): nothing to write
                assert self.sink is not None
                self.sink.up_to_date(index)
                self.up_to_date.append(self.files[index].name)
                bitmap[:] = b"\x01" * len(bitmap)
            else:
                merged = int.from_bytes(bitmap, "big") | int.from_bytes(held, "big")
                bitmap[:] = merged.to_bytes(len(bitmap), "big")
            added = bitmap.count(1) - before
            self.received += added
            self.resumed += added
        if self._report_due and self.received == self.total_blocks:
            self._report_due = False
            self._verify_due = True

    def _if_complete(self) -> Out:
        """Every block is in: verify at the next tick, and tell the sender nothing is
        missing (it keeps the sender patient while we verify)."""
        if self.received == self.total_blocks and not self._verify_due:
            self._verify_due = True
            return self._status(self._last_pass)
        return []

    def _learn_digests(self, body: bytes) -> None:
        """A later announce of our transfer: take the digests we were still waiting for."""
        if not any(f.digest_pending for f in self.files):
            return
        decoded = decode_announce(body)
        if decoded is None or decoded.block_size != self.block_size:
            return
        first, files = decoded.first, decoded.files
        mine = self.files[first : first + len(files)]
        if [(f.name, f.size) for f in files] != [(f.name, f.size) for f in mine]:
            return  # not the list we are receiving: ignore it
        for offset, theirs in enumerate(files):
            index = first + offset
            if self.files[index].digest_pending and not theirs.digest_pending:
                self.files[index] = self.files[index].with_digest(theirs.sha256)
        self._adopt()
        if self._awaiting_digests and not any(f.digest_pending for f in self.files):
            self._awaiting_digests = False
            self._verify_due = True

    def _verify(self) -> None:
        assert self.sink is not None and self.session is not None
        try:
            problem = self.sink.finish()
        except OSError as exc:
            self.sink.discard()
            problem = f"could not finish: {exc.strerror}"
        if problem and self.sink.mismatched and self.refetches < MAX_REFETCHES:
            # A block was forged, or damaged on the way or on disk: those files again.
            self.refetches += 1
            for index in self.sink.mismatched:
                cleared = self.bitmaps[index].count(1)
                self.bitmaps[index][:] = bytes(len(self.bitmaps[index]))
                self.received -= cleared
                self.refetched_blocks += cleared
            self.sink.rewind(self.sink.mismatched)
            return
        if problem:
            self._fail(problem)
            return
        self._complete_message = (
            head(COMPLETE, self.session) + RECEIVER.pack(self.receiver_id) + b"\x00"
        )
        self._set_state(ReceiveState.COMPLETE)

    def _fail(self, reason: str, *, resumable: bool = False) -> None:
        if self.sink is not None and resumable and self.state == ReceiveState.RECEIVING:
            self._keep()
        elif self.sink is not None:
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
            ranges.extend(missing_ranges(bitmap, index, limit=DENSE_RANGES + 1))
            if len(ranges) > DENSE_RANGES:
                return self._missing_maps(pass_number)
        chunks = [ranges[i : i + MAX_RANGES] for i in range(0, len(ranges), MAX_RANGES)] or [[]]
        return [
            (encode_ranges(self.session, self.receiver_id, pass_number, chunk), self.sender)
            for chunk in chunks[:STATUS_CHUNKS]
        ]

    def _missing_maps(self, pass_number: int) -> Out:
        """Dense loss: bitmaps of what is missing, from the first gap on (11,200 blocks a
        datagram), skipping stretches with nothing missing."""
        assert self.session is not None
        out: Out = []
        for index, bitmap in enumerate(self.bitmaps):
            start = bitmap.find(0)
            while start != -1 and len(out) < STATUS_CHUNKS:
                end = min(start + MAP_BLOCKS, len(bitmap))
                have = bytes(bitmap[start:end])
                datagram = encode_missing_map(
                    self.session, self.receiver_id, pass_number, index, start, have
                )
                out.append((datagram, self.sender))
                start = bitmap.find(0, end)
        return out

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
            "refused_announces": dict(self.refused),
            "resumed_blocks": self.resumed,
            "kept_blocks": self.kept,
            "refetched_blocks": self.refetched_blocks,  # received again after a bad sha256
            "kernel_drops": self.kernel_drops,  # repaired like any loss, but said
            "up_to_date": list(self.up_to_date),
        }
