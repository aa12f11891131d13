"""Reliable streams: NACK-based repair, in-order delivery and fragmentation, with no I/O.

Each sender numbers its reliable fragments (stream seq, from 1, 64 bits: no wrap). Receivers
detect gaps, wait a random back-off, then multicast a NACK; a NACK heard from another
receiver for the same seqs suppresses one's own (SRM / NORM style), so a gap seen by many
receivers costs about one NACK. The sender repairs from a bounded retransmit window, by
multicast, so one repair serves everyone. A gap that can no longer be repaired (the window
moved past it, or no repair came in ``repair_timeout``) becomes an ``Unrecoverable`` event
and delivery resumes at the next whole message: loss is never silent.

The session (session.py) owns the frames; this module owns the stream state: payload codecs,
``StreamSender`` and ``StreamReceiver``. Time and randomness come in as arguments.
"""

from __future__ import annotations

import bisect
import heapq
import math
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ACK",
    "NACK_HEAD",
    "NACK_RANGE",
    "RDATA_HEAD",
    "RSTATE",
    "UNKNOWN_END",
    "ReliableConfig",
    "SlowReceiver",
    "StreamReceiver",
    "StreamSender",
    "Unrecoverable",
    "decode_nack",
    "encode_nack",
    "ranges_of",
]

RDATA_HEAD = struct.Struct("!QII")  # stream seq, message length, fragment offset
NACK_HEAD = struct.Struct("!QIH")  # target sender, target incarnation, range count
NACK_RANGE = struct.Struct("!QI")  # first seq, count
RSTATE = struct.Struct("!QQ")  # oldest seq still in the window, next seq to be sent
ACK = struct.Struct("!QIQ")  # target sender, target incarnation, delivered through seq
MAX_NACK_RANGES = 64
UNKNOWN_END = (1 << 64) - 1  # an Unrecoverable's last_seq when the end is not known
MAX_GAP = 1 << 17  # seqs; a larger jump is beyond any window: restart instead of tracking it
MAX_MESSAGE_WIRE = 0xFFFFFFFF
SEND_BATCH = 256  # datagrams per pull: receive processing interleaves with long sends
PROBE_FIRST = 0.005  # tail probes (RSTATE) after the queue drains: 5 ms, doubling to 1 s
PROBE_LAST = 1.0
BLOCKED_PROBE = 0.02  # under "wait", how often a held sender asks for acknowledgements

ADAPTIVE_START_BPS = 1e9

SlowPolicy = Literal["drop", "wait"]


@dataclass(frozen=True)
class ReliableConfig:
    """Knobs of reliable streams; the defaults suit one LAN segment.

    Receiver side: ``nack_backoff`` is the largest random delay before a NACK (larger for
    bigger groups, so suppression has time to work); ``nack_repeat`` is how long to wait for
    a repair before asking again; ``repair_timeout`` is when a gap is given up;
    ``max_message`` and ``receiver_memory`` bound one sender's reassembly and out-of-order
    buffer; ``message_timeout`` bounds how long a half-received message may make no progress.

    Sender side: ``window_bytes`` is the retransmit window. ``slow_receiver`` is the policy
    when a receiver falls behind: ``"drop"`` (default) never waits, so a receiver that falls
    out of the window gets ``Unrecoverable``; ``"wait"`` holds new data until every receiver
    that acknowledges has the oldest data in the window, and drops a receiver whose
    acknowledgements stall for ``slow_timeout`` (a ``SlowReceiver`` event). ``rate_pps`` /
    ``rate_bps`` set the sending rate; with ``adaptive_rate`` (default) it is the starting
    rate (1 Gbit/s when unset) and NACK pressure moves it (``NackRateControl``); without,
    it is fixed, and None means as fast as the socket takes it.
    """

    nack_backoff: float = 0.01
    nack_repeat: float = 0.05
    repair_timeout: float = 5.0
    max_message: int = 64 << 20
    receiver_memory: int = 160 << 20
    message_timeout: float = 30.0
    window_bytes: int = 32 << 20
    slow_receiver: SlowPolicy = "drop"
    slow_timeout: float = 5.0
    rate_pps: float | None = None
    rate_bps: float | None = None
    adaptive_rate: bool = True
    ack_every: int = 256
    ack_delay: float = 0.02

    def __post_init__(self) -> None:
        if self.slow_receiver not in ("drop", "wait"):
            raise ValueError("slow_receiver must be 'drop' or 'wait'")
        positive = {
            "nack_backoff": self.nack_backoff,
            "nack_repeat": self.nack_repeat,
            "repair_timeout": self.repair_timeout,
            "max_message": self.max_message,
            "receiver_memory": self.receiver_memory,
            "message_timeout": self.message_timeout,
            "window_bytes": self.window_bytes,
            "slow_timeout": self.slow_timeout,
            "ack_every": self.ack_every,
            "ack_delay": self.ack_delay,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_message > MAX_MESSAGE_WIRE:
            raise ValueError(f"max_message is at most {MAX_MESSAGE_WIRE} bytes")
        for name, rate in (("rate_pps", self.rate_pps), ("rate_bps", self.rate_bps)):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be positive")
        if self.rate_pps is not None and self.rate_bps is not None:
            raise ValueError("give rate_pps or rate_bps, not both")


@dataclass(frozen=True)
class Unrecoverable:
    """Reliable data from ``sender`` that can no longer be repaired: seqs first..last.

    ``reason``: ``window-passed`` (the sender no longer has it), ``repair-timeout`` (no
    repair came), ``too-large`` (a message above ``max_message``), ``message-timeout``,
    ``sender-gone`` (the sender left or failed with data missing), ``sender-failed`` (the
    sender went silent: anything it sent from ``first_seq`` on, ``last_seq`` being
    ``UNKNOWN_END``, did not arrive), ``memory-limit`` (the gaps alone outgrew the memory
    budget), ``subscriber-overflow`` (delivered, but a subscription queue was full).
    ``partial`` is True when a message was already partly received and is dropped with the
    gap.
    """

    sender: int
    first_seq: int
    last_seq: int
    reason: str
    partial: bool = False


@dataclass(frozen=True)
class SlowReceiver:
    """Under ``slow_receiver="wait"``, a receiver whose acknowledgements stalled: no longer
    waited for. ``acked`` is the last seq it acknowledged."""

    peer: int
    acked: int


def ranges_of(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs to (first, count) runs."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and runs[-1][0] + runs[-1][1] == seq:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seq, 1))
    return runs


def encode_nack(sender: int, incarnation: int, runs: list[tuple[int, int]]) -> bytes:
    """A NACK payload (at most MAX_NACK_RANGES runs: the caller splits longer lists)."""
    parts = [NACK_HEAD.pack(sender, incarnation, len(runs))]
    parts += [NACK_RANGE.pack(first, count) for first, count in runs]
    return b"".join(parts)


def decode_nack(payload: bytes) -> tuple[int, int, list[tuple[int, int]]] | None:
    """(sender, incarnation, runs), or None for a malformed NACK (never raises)."""
    if len(payload) < NACK_HEAD.size:
        return None
    sender, incarnation, count = NACK_HEAD.unpack_from(payload)
    if count > MAX_NACK_RANGES or len(payload) != NACK_HEAD.size + count * NACK_RANGE.size:
        return None
    runs = []
    for index in range(count):
        first, length = NACK_RANGE.unpack_from(payload, NACK_HEAD.size + index * NACK_RANGE.size)
        if first == 0 or length == 0:
            return None
        runs.append((first, length))
    return sender, incarnation, runs


# --- sender ------------------------------------------------------------------------------


@dataclass
class _Outgoing:
    topic: str
    payload: memoryview
    offset: int
    chunk: int


@dataclass
class _Tracked:
    acked: int
    progressed_at: float


class StreamSender:
    """One node's outgoing reliable stream: queue, rate, retransmit window, repairs."""

    def __init__(self, config: ReliableConfig, now: float) -> None:
        self.config = config
        self.next_seq = 1
        # Sent fragments still repairable: (topic, RDATA payload); index = seq - oldest.
        self.window: deque[tuple[str, bytes]] = deque()
        self.window_bytes = 0
        self.queued_bytes = 0
        self.counters: dict[str, int] = {}
        self._queue: deque[_Outgoing] = deque()
        self._repairs: deque[int] = deque()
        self._repair_set: set[int] = set()
        self._repaired_at: dict[int, float] = {}
        self._tracked: dict[int, _Tracked] = {}
        self.slow_events: list[SlowReceiver] = []
        rate = config.rate_pps
        self._per_byte = False
        if config.rate_bps is not None:
            rate, self._per_byte = config.rate_bps / 8, True
        self.control: NackRateControl | None = None
        if config.adaptive_rate:
            if rate is None:
                rate, self._per_byte = ADAPTIVE_START_BPS / 8, True
            self.control = NackRateControl(rate, now)
        self._rate: float | None = None
        self._depth = 0.0
        if rate is not None:
            self._set_rate(rate)
        self._sent_new = self._sent_bytes = 0
        self._nacked_new = 0
        self._app_limited = True
        self._tokens = self._depth
        self._refilled = now
        self._probe_at: float | None = None
        self._probe_gap = PROBE_FIRST
        self._blocked_since: float | None = None
        self.state_wanted = False  # a NACK asked for seqs we no longer have: tell the window

    @property
    def oldest(self) -> int:
        """The oldest seq still in the retransmit window (next_seq when it is empty)."""
        return self.next_seq - len(self.window)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing to repair."""
        return not self._queue and not self._repairs

    @property
    def wants_acks(self) -> bool:
        return self.config.slow_receiver == "wait"

    def enqueue(self, topic: str, payload: bytes, chunk: int) -> None:
        """Queue one message, to be cut into fragments of ``chunk`` bytes as it is sent."""
        if len(payload) > self.config.max_message:
            raise ValueError(
                f"message of {len(payload)} bytes exceeds max_message ({self.config.max_message})"
            )
        if chunk <= 0:
            raise ValueError("the topic leaves no room for data in one datagram")
        self._queue.append(_Outgoing(topic, memoryview(payload), 0, chunk))
        self.queued_bytes += len(payload)

    def on_nack(self, runs: list[tuple[int, int]], now: float) -> None:
        """Queue repairs for the runs we still hold; note when some are gone."""
        # A seq is repaired at most once per hold-off (nack_backoff), however many NACKs ask:
        # the NACKs that crossed a repair are ignored. Longer, or growing, hold-offs were
        # tried: in a group where many receivers each lose some repairs, a seq legitimately
        # needs several repairs in quick succession, and the window passed them by.
        oldest, holdoff = self.oldest, self.config.nack_backoff
        self._bump("nacks-received")
        for first, count in runs:
            last = min(first + count, self.next_seq)
            if first < oldest:
                self.state_wanted = True
                first = oldest
            for seq in range(first, last):
                if seq in self._repair_set:
                    continue
                if seq not in self._repaired_at:
                    self._nacked_new += 1  # first request for this seq: a loss, not a repeat
                if now - self._repaired_at.get(seq, -1e9) < holdoff:
                    self._bump("repairs-held-off")  # a repair just went out: NACKs crossed it
                    continue
                self._repair_set.add(seq)
                self._repairs.append(seq)

    def on_ack(self, peer: int, seq: int, now: float) -> None:
        """A receiver has everything through ``seq`` (only used under ``wait``)."""
        if seq >= self.next_seq:
            return  # acknowledges what we never sent: hostile or stale, ignore
        tracked = self._tracked.get(peer)
        if tracked is None:
            self._tracked[peer] = _Tracked(seq, now)
        elif seq > tracked.acked:
            tracked.acked, tracked.progressed_at = seq, now

    def forget_peer(self, peer: int) -> None:
        """A receiver left or failed: stop waiting for it."""
        self._tracked.pop(peer, None)
        self._blocked_since = None  # the next pull decides afresh whether to hold

    def pull(self, now: float) -> list[tuple[str, bytes, bool]]:
        """Fragments to send now, repairs first: (topic, RDATA payload, is_repair)."""
        if self.control is not None and now >= self.control.next_sample:
            self._sample(now)
        self._refill(now)
        out: list[tuple[str, bytes, bool]] = []
        while self._repairs and len(out) < SEND_BATCH:
            seq = self._repairs[0]
            oldest = self.oldest
            if seq < oldest or seq >= self.next_seq:
                self._repairs.popleft()
                self._repair_set.discard(seq)
                continue
            topic, payload = self.window[seq - oldest]
            if not self._spend(len(payload)):
                return out
            self._repairs.popleft()
            self._repair_set.discard(seq)
            self._repaired_at[seq] = now
            out.append((topic, payload, True))
            self._bump("repairs-sent")
        while self._queue and len(out) < SEND_BATCH:
            if not self._make_room(now):
                break
            head = self._queue[0]
            size = min(head.chunk, len(head.payload) - head.offset)
            if not self._spend(size + RDATA_HEAD.size):
                break
            payload = (
                RDATA_HEAD.pack(self.next_seq, len(head.payload), head.offset)
                + head.payload[head.offset : head.offset + size]
            )
            head.offset += size
            self.queued_bytes -= size
            if head.offset >= len(head.payload):
                self._queue.popleft()
            self.window.append((head.topic, payload))
            self.window_bytes += len(payload)
            self.next_seq += 1
            self._sent_new += 1
            self._sent_bytes += len(payload)
            out.append((head.topic, payload, False))
        if not self._queue:
            self._app_limited = True
        if out:
            self._probe_gap = PROBE_FIRST
            self._probe_at = now + PROBE_FIRST
        if len(self._repaired_at) > 4 * len(self.window) + 1024:
            oldest = self.oldest
            self._repaired_at = {s: t for s, t in self._repaired_at.items() if s >= oldest}
        return out

    def probe_due(self, now: float) -> bool:
        """True when a tail probe (RSTATE) should go out now, so receivers see tail loss."""
        if self.state_wanted:
            self.state_wanted = False
            return True
        if self._blocked_since is not None and (self._probe_at is None or now >= self._probe_at):
            self._probe_at = now + BLOCKED_PROBE  # ask the receivers we wait for to acknowledge
            return True
        if self._probe_at is None or now < self._probe_at or not self.idle:
            return False
        self._probe_gap *= 2
        self._probe_at = now + self._probe_gap if self._probe_gap <= PROBE_LAST else None
        return True

    def next_timer(self, now: float) -> float | None:
        """When ``pull`` or ``probe_due`` has work again."""
        soonest: float | None = None
        if self._repairs or (self._queue and self._blocked_since is None):
            soonest = now if self._rate is None else self._refilled + self._deficit() / self._rate
        # A tail probe only matters once idle (or held): a busy sender would spin on it.
        probing = self.idle or self._blocked_since is not None
        if probing and self._probe_at is not None:
            soonest = self._probe_at if soonest is None else min(soonest, self._probe_at)
        if self._blocked_since is not None and self._tracked:
            since = self._blocked_since
            stall = min(max(t.progressed_at, since) for t in self._tracked.values())
            stall += self.config.slow_timeout
            soonest = stall if soonest is None else min(soonest, stall)
        return soonest

    def take_slow_events(self) -> list[SlowReceiver]:
        events, self.slow_events = self.slow_events, []
        return events

    # --- internals ---------------------------------------------------------------------

    def _bump(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _sample(self, now: float) -> None:
        """Feed the adaptive rate. A sample in which the queue ran dry says nothing about the
        path (the sender, not the network, set the pace): it is dropped. One with too few
        fragments is extended until it has enough, so a low rate can still climb back."""
        control = self.control
        assert control is not None
        if self._app_limited:
            control.skip(now)
        elif self._sent_new >= control.MIN_PACKETS:
            volume = self._sent_bytes if self._per_byte else None
            self._set_rate(control.on_sample(self._sent_new, self._nacked_new, now, volume))
        else:
            return  # keep counting
        self._sent_new = self._nacked_new = self._sent_bytes = 0
        self._app_limited = not self._queue

    @property
    def rate(self) -> float | None:
        """The current sending rate in bits/s (or packets/s with ``rate_pps``); None: no cap."""
        if self._rate is None:
            return None
        return self._rate * 8 if self._per_byte else self._rate

    def _set_rate(self, rate: float) -> None:
        # Bucket depth: 5 ms of sending (at least 8 datagrams), so a timer wake-up sends a burst.
        self._rate = rate
        self._depth = max(rate * 0.005, 8 * (1500 if self._per_byte else 1))

    def _refill(self, now: float) -> None:
        if self._rate is None:
            return
        self._tokens = min(self._depth, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now

    def _deficit(self) -> float:
        need = 1500.0 if self._per_byte else 1.0
        return max(0.0, need - self._tokens)

    def _spend(self, size: int) -> bool:
        if self._rate is None:
            return True
        cost = float(size) if self._per_byte else 1.0
        if self._tokens < min(cost, self._depth):
            return False
        self._tokens -= cost
        return True

    def _make_room(self, now: float) -> bool:
        """Slide the window until the next fragment fits; False when ``wait`` must hold."""
        while self.window and self.window_bytes >= self.config.window_bytes:
            oldest = self.oldest
            if self.config.slow_receiver == "wait":
                behind = [p for p, t in self._tracked.items() if t.acked < oldest]
                if behind and self._blocked_since is None:
                    self._blocked_since = now
                since = self._blocked_since or now
                stalled = [
                    p
                    for p in behind
                    if now - max(self._tracked[p].progressed_at, since) >= self.config.slow_timeout
                ]
                for peer in stalled:
                    self.slow_events.append(SlowReceiver(peer, self._tracked.pop(peer).acked))
                if len(stalled) < len(behind):
                    self._bump("held-for-slow-receiver")
                    return False
            self._blocked_since = None
            _, payload = self.window.popleft()
            self.window_bytes -= len(payload)
        return True


class NackRateControl:
    """Adaptive rate from NACK pressure that tells congestion from random loss.

    Every ``SAMPLE`` seconds the pressure is the share of new fragments NACKed for the first
    time. Pressure well above the learned random-loss level means "maybe too fast": the rate
    drops by ``BACK_OFF`` and the next sample checks the diagnosis by what got through
    (sent x (1 - pressure)). If the slower rate delivers about as much, the receivers were
    overrun (congestion): the lower rate stays. If delivery fell with the rate, the loss is
    random (a lossy path): the rate is restored and that pressure becomes the baseline. So
    20 % random loss never drives the rate down, while a receiver that cannot keep up does.
    Otherwise the rate grows by ``SPEED_UP`` per sample.
    """

    SAMPLE = 0.1
    MIN_PACKETS = 32
    BACK_OFF = 0.7
    SPEED_UP = 1.05
    TOLERANCE = 0.08  # delivery this much below what the baseline explains: maybe too fast
    CONGESTED = 0.85  # delivery kept above this share after a back-off: it was congestion
    FLOOR_SHARE = 0.01  # never below 1 % of the starting rate
    FLAT = 1.01  # a raise must deliver at least this much more to count as "it grew"
    EASE = 0.9  # after three flat raises
    RECHECK = 20  # samples between re-tests of a baseline above RECHECK_ABOVE
    RECHECK_ABOVE = 0.05

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.ceiling = rate * 10
        self.floor = rate * self.FLOOR_SHARE
        self.baseline = 0.0  # pressure that random loss explains
        self.next_sample = now + self.SAMPLE
        # A back-off under test: delivery before it, and samples still to skip (NACKs lag).
        self._probe: tuple[float, int, float] | None = None
        self._delivered = 0.0  # delivery rate of the last sample
        self._grew = False  # the last sample raised the rate
        self._flat = 0  # samples in a row where a raise delivered no more
        self._warm = False  # the first busy sample after idle is skipped: its NACKs trail
        self._last = now
        self._since_check = 0
        self.history: list[tuple[float, float]] = []  # (rate, pressure) per sample

    def skip(self, now: float) -> None:
        """A sample that carries no evidence (the sender ran out of data): start anew."""
        self._last, self.next_sample = now, now + self.SAMPLE
        self._warm = False

    def on_sample(self, sent: int, nacked: int, now: float, volume: float | None = None) -> float:
        """Fragments sent and first-time NACKed since the last sample; returns the new rate.

        ``volume`` is what was sent in the rate's unit (bytes for a bit rate; fragments when
        None). A back-off starts from what was really sent: a sender held back by its CPU or
        socket sends below its nominal rate, and cutting the nominal rate would change nothing.
        """
        elapsed = max(1e-3, now - self._last)
        self._last, self.next_sample = now, now + self.SAMPLE
        if sent < self.MIN_PACKETS:
            self._warm = False
            return self.rate  # idle or nearly: no evidence either way
        if not self._warm:
            self._warm = True
            return self.rate
        pressure = min(1.0, nacked / sent)
        delivered = sent * (1 - pressure) / elapsed
        actual = (sent if volume is None else volume) / elapsed
        self.history.append((self.rate, round(pressure, 4)))
        if len(self.history) > 600:
            del self.history[:300]
        if self._probe is not None:
            before, skip, rate_before = self._probe
            if skip:
                self._probe = (before, skip - 1, rate_before)  # NACKs for the faster sample
                return self.rate
            self._probe = None
            if delivered < before * self.CONGESTED:
                # Slower delivered less: the loss is random, not ours. Undo; expect this level.
                self.baseline = pressure
                self.rate = rate_before
                return self.rate
            # Congestion: the lower rate stays, and a baseline that blamed it on the path
            # (a wrong diagnosis from trailing NACKs) comes down.
            self.baseline = min(self.baseline, pressure)
        self._since_check += 1
        recheck = self.baseline > self.RECHECK_ABOVE and self._since_check >= self.RECHECK
        # Sampling noise: with n fragments a loss share b wobbles by sqrt(b(1-b)/n); three of
        # those are not a signal. Without this margin, small samples at a low rate trigger
        # false back-offs, and the rate ratchets down under pure random loss.
        level = max(self.baseline, 0.01)
        noise = 3 * math.sqrt(level * (1 - level) / sent)
        if recheck or 1 - pressure < (1 - self.baseline) * (1 - self.TOLERANCE) - noise:
            self._since_check = 0
            self._grew = False
            self._probe = (delivered, 1, self.rate)
            self.rate = max(self.floor, min(self.rate, actual) * self.BACK_OFF)
        elif self._grew and delivered < self._delivered * self.FLAT:
            # The last speed-up delivered nothing more: at capacity (a CPU, a link). Hold,
            # and after a few such samples ease off: a baseline that swallowed congestion
            # would otherwise keep the rate far above what gets through.
            self._grew = False
            self._flat += 1
            if self._flat >= 3:
                self._flat = 0
                self.rate = max(self.floor, self.rate * self.EASE)
        else:
            self.baseline += (pressure - self.baseline) * 0.1
            self.rate = min(self.ceiling, self.rate * self.SPEED_UP)
            self._grew, self._flat = True, 0
        self._delivered = delivered
        return self.rate


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


# --- receiver ----------------------------------------------------------------------------

# What the receiver's structures really cost, beyond the payload bytes (measured with
# tracemalloc on CPython 3.11, rounded up): a buffered fragment is a dict slot, a 4-tuple and a
# bytes object; a gap is a slotted object, a heap entry and a dict slot. The memory limits
# count these, so one-byte fragments cannot hold 100 times what the limit says.
FRAGMENT_COST = 200
GAP_COST = 240
LOST_COST = 160


class _Gap:
    """Missing seqs first..end-1, seen at ``seen``; next NACK at ``due``."""

    __slots__ = ("due", "end", "first", "quiet_until", "seen")

    def __init__(self, first: int, end: int, seen: float, due: float) -> None:
        self.first, self.end, self.seen, self.due = first, end, seen, due
        self.quiet_until = 0.0


class _Gaps:
    """Missing seqs as sorted ranges: a jump of a million seqs costs one entry, not a million.

    Each range carries its own NACK schedule (a heap with lazy deletion); an arrival inside a
    range splits it.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []  # sorted firsts
        self.by_first: dict[int, _Gap] = {}
        self.heap: list[tuple[float, int]] = []
        self.count = 0  # seqs missing

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator[_Gap]:
        return (self.by_first[first] for first in list(self.starts))

    def clear(self) -> None:
        self.starts.clear()
        self.by_first.clear()
        self.heap.clear()
        self.count = 0

    def add(self, first: int, end: int, seen: float, due: float) -> None:
        gap = _Gap(first, end, seen, due)
        bisect.insort(self.starts, first)
        self.by_first[first] = gap
        self.count += end - first
        self._schedule(gap)

    def append_range(self, first: int, end: int, seen: float, due: float) -> None:
        """Mark first..end-1, above every range, missing (extending the last when adjacent)."""
        if self.starts:
            last = self.by_first[self.starts[-1]]
            if last.end == first:
                last.end = end
                self.count += end - first
                return
        self.add(first, end, seen, due)

    def find(self, seq: int) -> _Gap | None:
        index = bisect.bisect_right(self.starts, seq) - 1
        if index < 0:
            return None
        gap = self.by_first[self.starts[index]]
        return gap if seq < gap.end else None

    def __contains__(self, seq: int) -> bool:
        return self.find(seq) is not None

    def lowest(self) -> int | None:
        return self.starts[0] if self.starts else None

    def highest(self) -> int | None:
        return self.by_first[self.starts[-1]].end - 1 if self.starts else None

    def remove_seq(self, seq: int) -> bool:
        """``seq`` arrived: True when it was missing."""
        gap = self.find(seq)
        if gap is None:
            return False
        self.count -= 1
        if gap.end - gap.first == 1:
            self._drop(gap)
        elif seq == gap.first:
            self._rekey(gap, seq + 1)
        elif seq == gap.end - 1:
            gap.end = seq
        else:
            right = _Gap(seq + 1, gap.end, gap.seen, gap.due)
            right.quiet_until = gap.quiet_until
            gap.end = seq
            bisect.insort(self.starts, right.first)
            self.by_first[right.first] = right
            self._schedule(right)
        return True

    def cut_below(self, limit: int) -> list[tuple[int, int]]:
        """Remove every missing seq below ``limit``; returns the (first, end) ranges removed."""
        removed: list[tuple[int, int]] = []
        while self.starts and self.starts[0] < limit:
            gap = self.by_first[self.starts[0]]
            stop = min(gap.end, limit)
            removed.append((gap.first, stop))
            self.count -= stop - gap.first
            if stop == gap.end:
                self._drop(gap)
            else:
                self._rekey(gap, stop)
        return removed

    def take(self, gap: _Gap) -> None:
        """Remove a whole range (given up)."""
        self.count -= gap.end - gap.first
        self._drop(gap)

    def suppress(self, runs: list[tuple[int, int]], until: float, budget: int = 256) -> None:
        """Ranges wholly inside a run someone else asked for: hold our NACK for them back."""
        for first, count in runs:
            end = first + count
            index = bisect.bisect_left(self.starts, first)
            while index < len(self.starts) and budget > 0:
                gap = self.by_first[self.starts[index]]
                if gap.first >= end:
                    break
                budget -= 1  # bounded work per NACK, whatever its runs span
                if gap.end <= end:
                    gap.quiet_until = until
                index += 1

    def due(self, now: float) -> list[_Gap]:
        """Ranges whose NACK time has come (each once; the caller reschedules)."""
        out: list[_Gap] = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            when, first = heapq.heappop(heap)
            gap = self.by_first.get(first)
            if gap is not None and gap.due == when and gap not in out:
                out.append(gap)
        return out

    def reschedule(self, gap: _Gap, due: float) -> None:
        gap.due = due
        self._schedule(gap)

    def next_due(self) -> float | None:
        heap = self.heap
        while heap:
            when, first = heap[0]
            gap = self.by_first.get(first)
            if gap is not None and gap.due == when:
                return when
            heapq.heappop(heap)  # stale: the range moved, split or went
        return None

    def _schedule(self, gap: _Gap) -> None:
        heapq.heappush(self.heap, (gap.due, gap.first))
        if len(self.heap) > 4 * len(self.starts) + 64:
            self.heap = [(g.due, g.first) for g in self.by_first.values()]
            heapq.heapify(self.heap)

    def _drop(self, gap: _Gap) -> None:
        index = bisect.bisect_left(self.starts, gap.first)
        del self.starts[index]
        del self.by_first[gap.first]

    def _rekey(self, gap: _Gap, first: int) -> None:
        """Move a range's start up (its place in the sorted list stays the same)."""
        index = bisect.bisect_left(self.starts, gap.first)
        del self.by_first[gap.first]
        self.starts[index] = gap.first = first
        self.by_first[first] = gap
        self._schedule(gap)


@dataclass
class _Partial:
    topic: str
    first_seq: int
    length: int
    started: float
    data: bytearray = field(default_factory=bytearray)


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
        self.highest = 0
        self.resync = True  # discard fragments until a message starts
        self.buffer: dict[int, tuple[str, int, int, bytes]] = {}
        self.buffered_bytes = 0
        self.gaps = _Gaps()
        # Given-up ranges not yet passed by delivery: first -> (end, reason)
        self._lost: dict[int, tuple[int, str]] = {}
        self._lost_starts: list[int] = []  # the same firsts, sorted
        self._partial: _Partial | None = None
        # (topic, message, first seq)
        self.delivered: list[tuple[str, bytes, int]] = []
        self.events: list[Unrecoverable] = []
        self.counters: dict[str, int] = {}
        self.acks_wanted = False
        self._acked = 0
        self._ack_at: float | None = None
        self._loss_start: tuple[int, str, bool] | None = None

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
        elif seq - self.highest > MAX_GAP:
            self._restart(seq)  # a jump no window could span: the next whole message
        if seq < self.next_deliver or seq in self.buffer or self._is_lost(seq):
            self._bump("duplicates")
            return True
        if seq > self.highest:
            self._note_highest(seq, now, room)
        # In order, a fragment is progress (it frees the buffer behind it): only the message
        # being assembled must fit. Out of order, everything held counts.
        held = self._partial_bytes() if seq == self.next_deliver else self.memory + FRAGMENT_COST
        if held + len(chunk) > self._limit(room):
            # Over the budget: keep it missing and ask again later (a NACK after back-off).
            self._bump("dropped-memory-limit")
            if seq not in self.gaps:
                self.gaps.append_range(seq, seq + 1, now, self._backoff(now))
            return True
        self.gaps.remove_seq(seq)
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
            self.next_deliver, self.highest = seq, seq - 1

    def on_state(self, oldest: int, next_seq: int, now: float, room: int | None = None) -> None:
        """The sender's window: seqs below ``oldest`` are gone; ``next_seq`` reveals tail loss."""
        if next_seq == 0 or oldest > next_seq:
            return
        if self.next_deliver == 0 or next_seq - self.highest > MAX_GAP:
            self._restart(next_seq)
            return
        if next_seq - 1 > self.highest:
            self._note_highest(next_seq - 1, now, room, inclusive=True)
        self._give_up_below(oldest, "window-passed", now)

    def on_foreign_nack(self, runs: list[tuple[int, int]], now: float) -> None:
        """Another receiver asked for these seqs: hold our own NACK for them back."""
        self.gaps.suppress(runs, now + self.config.nack_repeat)
        self._bump("nacks-heard")

    def handle_timer(self, now: float) -> list[list[tuple[int, int]]]:
        """Due NACKs, give-ups and message timeouts; returns NACKs to multicast."""
        ask: list[tuple[int, int]] = []
        given_up = suppressed = False
        for gap in self.gaps.due(now):
            if now - gap.seen >= self.config.repair_timeout:
                self.gaps.take(gap)
                self._lose(gap.first, gap.end, "repair-timeout")
                given_up = True
                continue
            if gap.quiet_until > now:
                suppressed = True
            else:
                ask.append((gap.first, gap.end - gap.first))
            self.gaps.reschedule(gap, now + self.config.nack_repeat * (1 + self._random()))
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
        if self.next_deliver and next_seq > self.highest + 1:
            lows.append(self.highest + 1)
            highs.append(next_seq - 1)
        if lows or self._partial is not None:
            first = self._partial.first_seq if self._partial else min(lows)
            last = max(
                [*highs, *(end - 1 for end, _ in self._lost.values()), self.next_deliver - 1]
            )
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
        return (
            self.buffered_bytes
            + FRAGMENT_COST * len(self.buffer)
            + GAP_COST * len(self.gaps)
            + LOST_COST * len(self._lost)
            + self._partial_bytes()
        )

    def _partial_bytes(self) -> int:
        return len(self._partial.data) if self._partial else 0

    # --- internals -----------------------------------------------------------------------

    def _bump(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _limit(self, room: int | None) -> int:
        limit = self.config.receiver_memory
        return limit if room is None else min(room, limit)

    def _backoff(self, now: float) -> float:
        return now + self.config.nack_backoff * self._random()

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
            self._partial = _Partial(topic, seq, length, now, bytearray(chunk))
            return
        if self.resync:
            self._bump("skipped-to-message-start")
            return
        partial = self._partial
        if partial is None or offset != len(partial.data) or length != partial.length:
            self.events.append(Unrecoverable(self.sender, seq, seq, "inconsistent", True))
            self._partial = None
            self.resync = True
            return
        partial.data += chunk
        partial.started = now  # the timeout counts from the last progress, not the start
        if len(partial.data) == partial.length:
            # One copy to immutable bytes: the peak is about twice the message for a moment.
            self.delivered.append((partial.topic, bytes(partial.data), partial.first_seq))
            self._partial = None
