"""One sender's reliable stream as a receiver sees it: gaps, NACKs, order, reassembly (no I/O)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from ..events import UNKNOWN_END, Unrecoverable
from .codec import MAX_GAP, MAX_GRTT, MAX_NACK_RANGES, RDATA_HEAD
from .config import ReliableConfig
from .gaps import Gaps


def _message_start(seq: int, length: int, offset: int, size: int) -> int:
    """The seq of the first fragment of the message this fragment belongs to.

    Every fragment but the last carries the same size, so offset / size counts the fragments
    before it. A last fragment (or an odd one) does not tell: then the next seq, where the
    next message starts.
    """
    if offset == 0:
        return seq
    back = offset // size if size else 0
    # A start further back than any window could hold is a forgery or long gone: begin at the
    # next message rather than track (and ask for) millions of fragments.
    if size and offset + size < length and offset % size == 0 and back < seq and back <= MAX_GAP:
        return seq - back
    return seq + 1


# What the receiver's structures really cost, beyond the payload bytes (measured with
# tracemalloc on CPython 3.11, rounded up): a buffered fragment is a dict slot, a 4-tuple and a
# bytes object; a gap is a slotted object, a heap entry and a dict slot. The memory limits
# count these, so one-byte fragments cannot hold 100 times what the limit says.
FRAGMENT_COST = 200
GAP_COST = 240
LOST_COST = 160
CHUNK_COST = 64  # a fragment of the message being assembled: its bytes object and list slot
GIVE_UP_ROUNDS = 4  # a gap outlives repair_timeout this many times at most, repairs or not
# A gap still open after this many repeats is asked for at the pace of a repair round.
URGENT_ROUNDS = 2
# A position claim (heartbeat, goodbye, RSTATE: frames anyone can forge in an open group)
# is believed this far past the highest seq of data actually seen, no further: about three
# 32 MiB windows of full fragments, so a receiver back from an outage asks for the whole
# window at once. A longer real tail is found in steps as repairs come in. A forged claim
# costs a NACK range, and the seqs it claimed are retracted, never lost: data arriving
# later is delivered.
CLAIM_AHEAD = 1 << 16
URGENT_FLOOR = 0.01  # seconds: the fastest urgent repeat, whatever the round trip
ECHO_EVERY = 0.25  # seconds between echoes of the sender's probes (one stream)


@dataclass
class _Partial:
    """A message being assembled: its fragments in order, joined once when whole (a
    bytearray grown by += copied the message again at each of its ~90 reallocations)."""

    topic: str
    first_seq: int
    length: int
    started: float
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0  # bytes in chunks
    held: int = 0  # what they cost: bytes plus each chunk's object

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        self.held += len(chunk) + CHUNK_COST


class StreamReceiver:
    """One sender's reliable stream as a receiver sees it: gaps, NACKs, order, reassembly.

    Memory is bounded by construction: gaps are ranges (one entry however wide), a jump
    beyond ``MAX_GAP`` restarts the stream (reported), and ``memory`` counts every structure
    held, so ``receiver_memory`` (and the session's budget across senders, passed as ``room``)
    hold against one-byte fragments too.
    """

    def __init__(
        self,
        sender: int,
        incarnation: int,
        config: ReliableConfig,
        random: Callable[[], float],
    ) -> None:
        self.sender = sender
        self.incarnation = incarnation
        self.config = config
        self._random = random
        self.next_deliver = 0  # 0: not synchronised yet (a late joiner starts at a message)
        self.highest = 0  # the highest seq known to exist: data seen, or a believed claim
        self.seen = 0  # the highest seq of data actually received (or where we started)
        self.resync = True  # discard fragments until a message starts
        self.buffer: dict[int, tuple[str, int, int, bytes]] = {}
        self.buffered_bytes = 0
        self.gaps = Gaps()
        # Given-up ranges not yet passed by delivery: first -> (end, reason)
        self._lost: dict[int, tuple[int, str]] = {}
        self._lost_starts: list[int] = []  # the same firsts, sorted
        self._partial: _Partial | None = None
        # (topic, message, first seq)
        self.delivered: list[tuple[str, bytes, int]] = []
        self.events: list[Unrecoverable] = []
        self.counters: dict[str, int] = {}
        self.acks_wanted = False
        self.grtt = 0.0  # the sender's group round trip, as its probes say (0: not known)
        self._echoed_at = -1e9
        self._acked = 0
        self._ack_at: float | None = None
        self._loss_start: tuple[int, str, bool] | None = None
        self._filled_at = -1e9  # when a missing fragment last arrived (repairs are coming)

    @property
    def missing(self) -> int:
        """How many seqs are missing now."""
        return self.gaps.count

    # --- inputs --------------------------------------------------------------------------

    def on_data(self, payload: bytes, topic: str, now: float, room: int | None = None) -> bool:
        """One RDATA payload; False when malformed (the caller counts the drop).

        ``room``: the most this stream may hold after it (the session's budget across
        senders); ``receiver_memory`` applies in any case.
        """
        if len(payload) < RDATA_HEAD.size:
            return False
        seq, length, offset = RDATA_HEAD.unpack_from(payload)
        chunk = payload[RDATA_HEAD.size :]
        if seq == 0 or offset + len(chunk) > length or (not chunk and length):
            return False
        if self.next_deliver == 0:
            # First contact with no hello telling where the stream stands: start at the
            # first fragment of the message under way (its earlier fragments are recent, so
            # still repairable), like NORM syncing to the object it sees.
            self._restart(_message_start(seq, length, offset, len(chunk)))
        elif seq == self.next_deliver == self.highest + 1:
            # The common case: the next fragment, nothing outstanding (no gap, nothing
            # buffered or lost lies between next_deliver and highest). Only the message
            # being assembled must fit.
            partial = self._partial
            if (partial.held if partial else 0) + len(chunk) <= self._limit(room):
                self.highest = self.seen = seq
                self._take(seq, topic, length, offset, chunk, now)
                self.next_deliver = seq + 1
                return True
        elif seq - self.highest > MAX_GAP:
            self._restart(seq)  # a jump no window could span: the next whole message
        if seq < self.next_deliver or seq in self.buffer or self._is_lost(seq):
            self._bump("duplicates")
            return True
        if seq > self.highest:
            self._note_highest(seq, now, room)
        self.seen = max(self.seen, seq)
        # In order, a fragment is progress (it frees the buffer behind it): only the message
        # being assembled must fit. Out of order, everything held counts.
        held = self._partial_bytes() if seq == self.next_deliver else self.memory + FRAGMENT_COST
        if held + len(chunk) > self._limit(room):
            # Over the budget: keep it missing and ask again later (a NACK after back-off).
            self._bump("dropped-memory-limit")
            if seq not in self.gaps:
                self.gaps.append_range(seq, seq + 1, now, self._backoff(now))
            return True
        if self.gaps.remove_seq(seq):
            self._filled_at = now
        if seq == self.next_deliver:
            self._take(seq, topic, length, offset, chunk, now)
            self.next_deliver += 1
            self._deliver_ready(now)
        else:
            self.buffer[seq] = (topic, length, offset, chunk)
            self.buffered_bytes += len(chunk)
        return True

    def start_at(self, seq: int) -> None:
        """Expect the stream from ``seq`` (the sender's hello said so); only before data."""
        if self.next_deliver == 0 and seq > 0:
            self.next_deliver, self.highest, self.seen = seq, seq - 1, seq - 1

    def on_state(self, oldest: int, next_seq: int, now: float, room: int | None = None) -> None:
        """The sender's window: seqs below ``oldest`` are gone; ``next_seq`` reveals tail loss.

        A claim, not data: it never starts or restarts the stream (data does), its tail is
        believed ``CLAIM_AHEAD`` past the data seen, and ``oldest`` gives up only gaps below
        data seen (a claimed tail that goes unrepaired is retracted, not lost)."""
        if next_seq == 0 or oldest > next_seq or self.next_deliver == 0:
            return
        tail = min(next_seq - 1, self.seen + CLAIM_AHEAD)
        if tail < next_seq - 1:
            self._bump("claims-clamped")
        if tail > self.highest:
            self._note_highest(tail, now, room, inclusive=True)
        self._give_up_below(min(oldest, self.seen + 1), "window-passed", now)

    def believable(self, next_seq: int) -> int:
        """``next_seq`` as far as a claim is believed here (see ``on_state``)."""
        return min(next_seq, self.seen + CLAIM_AHEAD + 1) if self.next_deliver else next_seq

    def on_probe(self, grtt_us: int, now: float) -> bool:
        """A probe of the sender's: its group round trip (our NACK timing scales with it, as
        NORM's does with GRTT). True when its stamp should be echoed now: once per
        ``ECHO_EVERY`` at most, so probes (or forged ones) cannot make us chatter."""
        self.grtt = min(grtt_us / 1e6, MAX_GRTT)
        if now - self._echoed_at < ECHO_EVERY:
            return False
        self._echoed_at = now
        return True

    @property
    def nack_backoff(self) -> float:
        """The longest random wait before a NACK: a round trip at least, so that a NACK
        from a receiver nearer the sender can arrive and suppress ours."""
        return max(self.config.nack_backoff, self.grtt)

    @property
    def nack_repeat(self) -> float:
        """How long to wait for a repair before asking again: the repair needs a round
        trip after the NACK's back-off, or every NACK would be sent twice."""
        return max(self.config.nack_repeat, 2 * self.grtt + self.nack_backoff)

    @property
    def urgent_repeat(self) -> float:
        """The repeat for a gap that outlived ``URGENT_ROUNDS`` rounds: the least a repair round
        can take (our back-off and a round trip), not the configured pause. Such gaps are rare
        (at 20 % loss, 4 % of them) and the window may pass them: in a 32 MiB window that
        lives 0.4 s, 50-100 ms rounds left about five, and a few fragments in 50,000 lost
        their original and five repairs in a row."""
        return min(self.nack_repeat, max(URGENT_FLOOR, 2 * self.grtt + self.nack_backoff))

    def on_foreign_nack(self, runs: list[tuple[int, int]], now: float) -> None:
        """Another receiver asked for these seqs: hold our own NACK for them back."""
        self.gaps.suppress(runs, now + self.nack_repeat)
        self._bump("nacks-heard")

    def handle_timer(self, now: float) -> list[list[tuple[int, int]]]:
        """Due NACKs, give-ups and message timeouts; returns NACKs to multicast."""
        ask: list[tuple[int, int]] = []
        given_up = suppressed = False
        repeat, urgent = self.nack_repeat, self.urgent_repeat
        # A gap is given up after repair_timeout with no repair coming for any of ours: a
        # sender that repairs us at its pace (a member's share of its rate, the rest when
        # the rate is spare) is waited for, up to GIVE_UP_ROUNDS timeouts at most.
        timeout = self.config.repair_timeout
        for gap in self.gaps.due(now):
            waited = now - gap.seen
            if waited >= timeout and (
                gap.first > self.seen  # only claimed: no patience for a claim
                or now - self._filled_at >= timeout
                or waited >= GIVE_UP_ROUNDS * timeout
            ):
                self.gaps.take(gap)
                if gap.first > self.seen:  # only claimed: nothing after it ever arrived
                    self._bump("claims-retracted")
                    self.highest = max(self.seen, self.gaps.highest() or 0)
                    continue
                self._lose(gap.first, gap.end, "repair-timeout")
                given_up = True
                continue
            if gap.quiet_until > now:
                suppressed = True
            else:
                ask.append((gap.first, gap.end - gap.first))
            old = now - gap.seen > URGENT_ROUNDS * repeat
            wait = urgent if old else repeat
            self.gaps.reschedule(gap, now + wait * (1 + self._random()))
        if suppressed:
            self._bump("nacks-suppressed")
        nacks: list[list[tuple[int, int]]] = []
        if ask:
            ask.sort()
            for start in range(0, len(ask), MAX_NACK_RANGES):
                nacks.append(ask[start : start + MAX_NACK_RANGES])
            self._bump("nacks-sent")
        partial = self._partial
        if partial is not None and now - partial.started > self.config.message_timeout:
            self._partial = None
            self.resync = True
            self.events.append(
                Unrecoverable(
                    self.sender, partial.first_seq, self.next_deliver - 1, "message-timeout", True
                )
            )
        if given_up or self._lost:
            self._deliver_ready(now)
        return nacks

    def ack_due(self, now: float) -> int | None:
        """The seq to acknowledge now (under the sender's ``wait`` policy), or None."""
        if not self.acks_wanted or self.next_deliver == 0:
            return None
        through = self.next_deliver - 1
        if through <= self._acked:
            self._ack_at = None
            return None
        if through - self._acked >= self.config.ack_every or (
            self._ack_at is not None and now >= self._ack_at
        ):
            self._acked, self._ack_at = through, None
            return through
        if self._ack_at is None:
            self._ack_at = now + self.config.ack_delay
        return None

    def ack_now(self) -> int | None:
        """Acknowledge at once (the sender probed while holding data for us)."""
        if self.next_deliver == 0:
            return None
        self._acked, self._ack_at = self.next_deliver - 1, None
        return self._acked

    def close(self, reason: str, next_seq: int = 0) -> None:
        """The sender is gone: whatever is missing or half-received is lost.

        ``next_seq``: where the sender said its stream stood (its goodbye); anything between
        what we saw and that is lost too, so a tail is never silent.
        """
        lows = [s for s in (self.gaps.lowest(), *self._lost) if s is not None]
        highs = [s for s in (self.gaps.highest(), *self.buffer) if s is not None]
        if self.buffer:
            lows.append(min(self.buffer))
        # A tail claimed beyond what is believed: lost from there, its end not known (a
        # forged goodbye cannot make us report 2^40 seqs; a real long tail is still said).
        beyond = next_seq > self.believable(next_seq)
        next_seq = self.believable(next_seq)
        if self.next_deliver and next_seq > self.highest + 1:
            lows.append(self.highest + 1)
            highs.append(next_seq - 1)
        if lows or self._partial is not None:
            first = self._partial.first_seq if self._partial else min(lows)
            last = max(
                [*highs, *(end - 1 for end, _ in self._lost.values()), self.next_deliver - 1]
            )
            last = UNKNOWN_END if beyond else last
            self.events.append(
                Unrecoverable(self.sender, first, last, reason, self._partial is not None)
            )
        self.gaps.clear()
        self.buffer.clear()
        self._lost.clear()
        self._lost_starts.clear()
        self.buffered_bytes = 0
        self._partial = None

    @property
    def position(self) -> int:
        """The next seq this receiver expects (0 before the stream is known)."""
        return self.next_deliver

    def next_timer(self) -> float | None:
        soonest = self.gaps.next_due()
        for when in (
            self._ack_at,
            None if self._partial is None else self._partial.started + self.config.message_timeout,
        ):
            if when is not None and (soonest is None or when < soonest):
                soonest = when
        return soonest

    @property
    def memory(self) -> int:
        """Bytes held for this sender, structures included: out-of-order fragments, gap and
        loss ranges, a half-received message."""
        partial = self._partial
        return (
            self.buffered_bytes
            + FRAGMENT_COST * len(self.buffer)
            + GAP_COST * len(self.gaps.starts)
            + LOST_COST * len(self._lost)
            + (partial.held if partial else 0)
        )

    def _partial_bytes(self) -> int:
        return self._partial.held if self._partial else 0

    # --- internals -----------------------------------------------------------------------

    def _bump(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _limit(self, room: int | None) -> int:
        limit = self.config.receiver_memory
        return limit if room is None else min(room, limit)

    def _backoff(self, now: float) -> float:
        return now + self.nack_backoff * self._random()

    def _is_lost(self, seq: int) -> bool:
        index = bisect.bisect_right(self._lost_starts, seq) - 1
        return index >= 0 and seq < self._lost[self._lost_starts[index]][0]

    def _note_highest(
        self, seq: int, now: float, room: int | None, *, inclusive: bool = False
    ) -> None:
        """Seqs between the highest seen and ``seq`` are a gap (``seq`` too, when inclusive).

        When even one more range does not fit the memory budget, the stream restarts past
        the gap instead, and what lay before is reported lost.
        """
        end = seq + 1 if inclusive else seq
        first = self.highest + 1
        self.highest = seq
        if end <= first:
            return
        if GAP_COST * (len(self.gaps) + 1) > self._limit(room):
            # The ranges alone outgrow the budget (only a hostile or hopeless stream does
            # that; fragments are dropped long before): start afresh, and say so.
            self._bump("restarted-memory-limit")
            self._restart(end, "memory-limit")
            self.highest = seq
            return
        self.gaps.append_range(first, end, now, self._backoff(now))

    def _give_up_below(self, oldest: int, reason: str, now: float) -> None:
        removed = self.gaps.cut_below(oldest)
        for first, end in removed:
            self._lose(first, end, reason)
        if removed:
            self._deliver_ready(now)

    def _lose(self, first: int, end: int, reason: str) -> None:
        self._lost[first] = (end, reason)
        bisect.insort(self._lost_starts, first)

    def _restart(self, seq: int, reason: str = "window-passed") -> None:
        """Start (again) at ``seq``, at the next whole message; what lay between is lost."""
        if self.next_deliver:
            partial = self._partial
            first = partial.first_seq if partial else self.next_deliver
            if seq - 1 >= first:
                self.events.append(
                    Unrecoverable(self.sender, first, seq - 1, reason, partial is not None)
                )
            self.gaps.clear()
            self.buffer.clear()
            self.buffered_bytes = 0
            self._partial = None
        self.next_deliver, self.highest, self.resync = seq, seq - 1, True
        self.seen = seq - 1
        self._lost.clear()
        self._lost_starts.clear()
        self._loss_start = None

    def _deliver_ready(self, now: float) -> None:
        while True:
            seq = self.next_deliver
            item = self.buffer.pop(seq, None)
            if item is not None:
                self.buffered_bytes -= len(item[3])
                self._close_loss()
                self._take(seq, *item, now)
                self.next_deliver += 1
                continue
            lost = self._lost.pop(seq, None)
            if lost is None:
                break
            self._lost_starts.remove(seq)  # the lowest: delivery meets lost ranges in order
            end, reason = lost
            if self._loss_start is None:
                self._loss_start = (seq, reason, self._partial is not None)
            self._partial = None
            self.resync = True
            self.next_deliver = end
        self._close_loss()

    def _close_loss(self) -> None:
        if self._loss_start is not None:
            first, reason, partial = self._loss_start
            self.events.append(
                Unrecoverable(self.sender, first, self.next_deliver - 1, reason, partial)
            )
            self._loss_start = None

    def _take(
        self, seq: int, topic: str, length: int, offset: int, chunk: bytes, now: float
    ) -> None:
        """The in-order fragment ``seq``: start, extend or finish a message."""
        self._close_loss()
        if offset == 0:
            if self._partial is not None:  # a message restarted mid-way: the sender reset
                started = self._partial.first_seq
                self.events.append(
                    Unrecoverable(self.sender, started, seq - 1, "inconsistent", True)
                )
                self._partial = None
            self.resync = False
            if length > self.config.max_message:
                self.events.append(Unrecoverable(self.sender, seq, seq, "too-large", False))
                self.resync = True
                return
            if len(chunk) == length:
                self.delivered.append((topic, chunk, seq))
                return
            self._partial = _Partial(topic, seq, length, now)
            self._partial.add(chunk)
            return
        if self.resync:
            self._bump("skipped-to-message-start")
            return
        partial = self._partial
        if partial is None or offset != partial.size or length != partial.length:
            self.events.append(Unrecoverable(self.sender, seq, seq, "inconsistent", True))
            self._partial = None
            self.resync = True
            return
        partial.add(chunk)
        partial.started = now  # the timeout counts from the last progress, not the start
        if partial.size == partial.length:
            # One copy, joined: the peak is about twice the message for a moment.
            self.delivered.append((partial.topic, b"".join(partial.chunks), partial.first_seq))
            self._partial = None
