"""One node's outgoing reliable stream: queue, rate, retransmit window, repairs (no I/O)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..events import SlowReceiver
from ..pacing import TokenBucket
from .codec import MAX_GRTT, RDATA_HEAD
from .config import ReliableConfig
from .rate import NackRateControl
from .runs import SeqRuns

SEND_BATCH = 256  # datagrams per pull: receive processing interleaves with long sends
PROBE_FIRST = 0.005  # tail probes (RSTATE) after the queue drains: 5 ms, doubling to 1 s
PROBE_LAST = 1.0
BLOCKED_PROBE = 0.02  # under "wait", how often a held sender asks for acknowledgements
RTT_PROBE_EVERY = 1.0  # while sending, a probe (RSTATE) a second measures the round trip
MAX_DEPARTED = 4096  # departures remembered while confirming (members are bounded anyway)
CONFIRM_PROBE = 0.05  # while confirming, how often an idle sender asks for acknowledgements
ADAPTIVE_START_BPS = 1e9
# A member's repairs go before new data up to this share of the rate (after a burst). A
# receiver losing 20 % needs 25 % of new data again; an insider's NACKs, whatever their
# shape, take no more of a busy sender. Beyond it, asks wait for spare rate.
REPAIR_SHARE = 0.25
REPAIR_BURST = 0.1  # seconds of the sending rate a member may ask for at once
MAX_BUDGETS = 4096  # members with a budget (members are bounded anyway)
MAX_DEFERRED = 4096  # runs of repairs deferred until the rate is spare


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
        self._asked: set[int] = set()  # seqs NACKed at least once (the rate's loss signal)
        self._budgets: dict[int, TokenBucket] = {}  # each member's repair budget
        self._deferred = SeqRuns(MAX_DEFERRED)  # asked over budget: for when the rate is spare
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
        self._bucket = TokenBucket(rate, self._depth_for(rate), now, full=True)
        self._message_start = 1  # the seq of the first fragment of the message being sent
        self._sent_new = self._sent_bytes = 0
        self._nacked_new = 0
        self._app_limited = True
        self._probe_at: float | None = None
        self._probe_gap = PROBE_FIRST
        self._blocked_since: float | None = None
        # Set while the application waits for every receiver to acknowledge (flush):
        # idle probes then ask for acknowledgements, at least a round trip apart.
        self.confirming = False
        self._confirm_at: float | None = None
        # Receivers gone while confirming: peer -> (said goodbye, had acknowledged everything)
        self.departed: dict[int, tuple[bool, bool]] = {}
        self.state_wanted = False  # a NACK asked for seqs we no longer have: tell the window
        # Round trips measured from echoed probes, per receiver (smoothed); the group's
        # (GRTT) is the largest: repairs wait for it, receivers' NACKs scale with it.
        self.rtts: dict[int, float] = {}
        self.grtt = 0.0
        self._rtt_probe_at = now

    @property
    def oldest(self) -> int:
        """The oldest seq still in the retransmit window (next_seq when it is empty)."""
        return self.next_seq - len(self.window)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing to repair."""
        return not self._queue and not self._repairs and not self._deferred

    @property
    def settled(self) -> bool:
        """Nothing queued and no repair within its asker's share pending. Deferred asks are
        left out: an insider keeps adding them, and flush must not wait on it for ever."""
        return not self._queue and not self._repairs

    @property
    def wants_acks(self) -> bool:
        return self.config.slow_receiver == "wait" or self.confirming

    def confirm(self, on: bool, now: float) -> None:
        """Ask receivers to acknowledge (``on``) until told to stop: see ``acknowledged``."""
        if on and not self.confirming:
            self.departed.clear()
        self.confirming = on
        self._confirm_at = now if on else None

    def acknowledged(self, peer: int) -> bool:
        """True when ``peer``, a member, acknowledged everything sent so far (settled on its
        side: delivered, or reported lost to its application)."""
        tracked = self._tracked.get(peer)
        return self.next_seq == 1 or (tracked is not None and tracked.acked >= self.next_seq - 1)

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

    def on_nack(self, runs: list[tuple[int, int]], now: float, requester: int = 0) -> None:
        """Queue repairs for the runs we still hold; note when some are gone. ``requester``
        (a member's id; 0: not said) spends its own repair budget: a member's repairs go
        before new data for REPAIR_BURST of the rate at once, then for REPAIR_SHARE of it (all a
        receiver losing 20 % needs), however it shapes its NACKs. Beyond that they are
        deferred, not refused: they go out when no new data is waiting (the rate is spare),
        so one member's asks never take the others' goodput, and a receiver losing more than
        its share is still repaired once the stream pauses or waits for it."""
        budget = self._repair_budget(requester, now)
        # A seq is repaired at most once per hold-off (nack_backoff), however many NACKs ask:
        # the NACKs that crossed a repair are ignored. Longer, or growing, hold-offs were
        # tried: in a group where many receivers each lose some repairs, a seq legitimately
        # needs several repairs in quick succession, and the window passed them by.
        # The hold-off lasts a group round trip at least: a NACK that arrives sooner after a
        # repair was sent before its receiver could have seen that repair.
        oldest, holdoff = self.oldest, self._holdoff
        self._bump("nacks-received")
        for first, count in _merged(runs):  # 64 copies of a whole-window run cost one
            last = min(first + count, self.next_seq)
            if first < oldest:
                self.state_wanted = True
                self._bump("nacked-gone", min(oldest, first + count) - first)  # lost there
                first = oldest
            if first >= last:
                continue
            if budget is not None and budget.tokens <= 0:
                self._defer(first, last)  # a run, not a walk: an over-budget flood costs O(1)
                continue
            for seq in range(first, last):
                # A repair costs its asker the fragment; asking for one already queued or
                # just sent costs a sixteenth of that, so a flood of NACKs for what is on its
                # way walks no further than the budget, and honest repeats cost little.
                cost = len(self.window[seq - oldest][1]) if self._per_byte else 1
                wanted = seq not in self._repair_set
                if wanted and now - self._repaired_at.get(seq, -1e9) < holdoff:
                    self._bump("repairs-held-off")  # a repair just went out: NACKs crossed it
                    wanted = False
                if budget is not None and not budget.spend(cost if wanted else cost / 16):
                    self._defer(seq, last)
                    break
                if not wanted:
                    continue
                if seq not in self._asked:  # first request for this seq: a loss, not a repeat
                    self._asked.add(seq)  # (a deferred one asked again is no new loss either)
                    self._nacked_new += 1
                self._repair_set.add(seq)
                self._repairs.append(seq)

    def _defer(self, first: int, last: int) -> None:
        """Keep asks over their budget for when the rate is spare (each seq once, however
        often asked; past MAX_DEFERRED runs they are let go: their receiver asks again)."""
        self._bump("repairs-deferred", last - first)
        if not self._deferred.add(first, last):
            self._bump("repairs-deferred-dropped", last - first)

    def _repair_budget(self, requester: int, now: float) -> TokenBucket | None:
        rate = self._bucket.rate
        if not requester or rate is None:
            return None  # no rate to take a share of: repairs are bounded by the hold-off
        # A burst of REPAIR_BURST of the rate at once (a hiccup's losses): more, queued ahead
        # of everyone's new data and of other members' repairs, would let one member's asks
        # hold the others' repairs until the window passed them.
        depth = max(rate * REPAIR_BURST, 64.0 * (1500 if self._per_byte else 1))
        budget = self._budgets.get(requester)
        if budget is None:
            if len(self._budgets) >= MAX_BUDGETS:
                self._budgets.pop(next(iter(self._budgets)))
            budget = TokenBucket(rate * REPAIR_SHARE, depth, now, full=True)
            self._budgets[requester] = budget
        else:
            budget.set_rate(rate * REPAIR_SHARE, depth)
            budget.refill(now)
        return budget

    def on_ack(self, peer: int, seq: int, now: float) -> None:
        """A receiver has everything through ``seq`` (for ``wait`` and ``acknowledged``)."""
        if seq >= self.next_seq:
            return  # acknowledges what we never sent: hostile or stale, ignore
        tracked = self._tracked.get(peer)
        if tracked is None:
            self._tracked[peer] = _Tracked(seq, now)
        elif seq > tracked.acked:
            tracked.acked, tracked.progressed_at = seq, now

    @staticmethod
    def stamp(now: float) -> int:
        """Our clock as a probe carries it (µs, mod 2**32)."""
        return int(now * 1e6) & 0xFFFFFFFF

    def on_echo(self, peer: int, stamp: int, held_us: int, now: float) -> None:
        """A receiver echoed a probe's ``stamp`` after holding it ``held_us``: one round
        trip sample. A sample outside 0..MAX_GRTT (a stale or forged echo) is refused."""
        elapsed = ((self.stamp(now) - stamp) & 0xFFFFFFFF) / 1e6 - held_us / 1e6
        if not 0.0 <= elapsed <= MAX_GRTT:
            self._bump("rtt-samples-refused")
            return
        previous = self.rtts.get(peer)
        # Up at once (a path got longer: repairs must not storm), down slowly (NORM's way).
        if previous is None or elapsed > previous:
            self.rtts[peer] = elapsed
        else:
            self.rtts[peer] = previous + (elapsed - previous) / 8
        self.grtt = max(self.rtts.values())
        self._bump("rtt-samples")

    def forget_peer(self, peer: int, said_goodbye: bool = False) -> None:
        """A receiver left or failed: stop waiting for it."""
        if self.confirming and len(self.departed) < MAX_DEPARTED:
            self.departed[peer] = (said_goodbye, self.acknowledged(peer))
        self._tracked.pop(peer, None)
        self._budgets.pop(peer, None)
        self.rtts.pop(peer, None)
        self.grtt = max(self.rtts.values(), default=0.0)
        self._blocked_since = None  # the next pull decides afresh whether to hold

    def pull(self, now: float) -> list[tuple[str, bytes, bool]]:
        """Fragments to send now, repairs first: (topic, RDATA payload, is_repair)."""
        if self.control is not None and now >= self.control.next_sample:
            self._sample(now)
        self._bucket.refill(now)
        out: list[tuple[str, bytes, bool]] = []
        while self._repairs and len(out) < SEND_BATCH:
            seq = self._repairs[0]
            oldest = self.oldest
            if seq < oldest or seq >= self.next_seq:
                self._repairs.popleft()
                self._repair_set.discard(seq)
                continue
            if not self._repair(seq, oldest, now, out):
                return out
            self._repairs.popleft()
            self._repair_set.discard(seq)
        self._pull_new(out, now)
        if not self._queue:
            self._app_limited = True
        if self._deferred and len(out) < SEND_BATCH and self._rate_spare:
            self._pull_deferred(out, now)
        if out:
            self._probe_gap = PROBE_FIRST
            self._probe_at = now + PROBE_FIRST
        if max(len(self._repaired_at), len(self._asked)) > 4 * len(self.window) + 1024:
            oldest = self.oldest  # per-seq records of what left the window go
            self._repaired_at = {s: t for s, t in self._repaired_at.items() if s >= oldest}
            self._asked = {s for s in self._asked if s >= oldest}
        return out

    def _pull_new(self, out: list[tuple[str, bytes, bool]], now: float) -> None:
        """New fragments from the queue while the window and the rate allow (per fragment:
        what is looked up once goes in locals)."""
        queue, window, spend, per_byte = (
            self._queue,
            self.window,
            self._bucket.spend,
            self._per_byte,
        )
        pack, head_size, window_limit = RDATA_HEAD.pack, RDATA_HEAD.size, self.config.window_bytes
        seq = self.next_seq
        sent = sent_bytes = 0
        while queue and len(out) < SEND_BATCH:
            head = queue[0]
            offset, length = head.offset, len(head.payload)
            if offset == 0:
                self._message_start = seq
            # (the window slides only when full: most fragments skip the call)
            if self.window_bytes >= window_limit and not self._make_room(now):
                break
            size = min(head.chunk, length - offset)
            if not spend(size + head_size if per_byte else 1):
                break
            payload = pack(seq, length, offset) + head.payload[offset : offset + size]
            head.offset = offset + size
            if offset + size >= length:
                queue.popleft()
            window.append((head.topic, payload))
            self.window_bytes += len(payload)
            seq += 1
            self.next_seq = seq  # (read by _make_room through oldest)
            sent += 1
            sent_bytes += len(payload)
            out.append((head.topic, payload, False))
        self.queued_bytes -= sent_bytes - sent * head_size
        self._sent_new += sent
        self._sent_bytes += sent_bytes

    def _pull_deferred(self, out: list[tuple[str, bytes, bool]], now: float) -> None:
        """Deferred repairs, while the rate is spare (no new data waits to go out)."""
        holdoff = self._holdoff
        steps = 4 * SEND_BATCH  # seqs looked at per pull: skipping is bounded too
        while len(out) < SEND_BATCH and steps:
            steps -= 1
            oldest = self.oldest
            seq = self._deferred.pop_lowest(oldest)
            if seq is None or seq >= self.next_seq:  # (asks are cut at next_seq when taken)
                return
            if seq in self._repair_set or now - self._repaired_at.get(seq, -1e9) < holdoff:
                continue  # on its way already, or just sent
            if not self._repair(seq, oldest, now, out):
                self._deferred.add(seq, seq + 1)  # next time
                return

    def _repair(
        self, seq: int, oldest: int, now: float, out: list[tuple[str, bytes, bool]]
    ) -> bool:
        """Send ``seq`` again (a repair) if the rate allows; False when it does not."""
        topic, payload = self.window[seq - oldest]
        if not self._spend(len(payload)):
            return False
        self._deferred.discard(seq)  # asked within a share too: once is enough
        self._repaired_at[seq] = now
        out.append((topic, payload, True))
        self._bump("repairs-sent")
        return True

    def probe_due(self, now: float) -> bool:
        """True when a tail probe (RSTATE) should go out now, so receivers see tail loss."""
        if self.state_wanted:
            self.state_wanted = False
            return True
        if not self.idle and now >= self._rtt_probe_at:
            self._rtt_probe_at = now + RTT_PROBE_EVERY  # while sending: measure the round trip
            return True
        if self._blocked_since is not None and (self._probe_at is None or now >= self._probe_at):
            self._probe_at = now + BLOCKED_PROBE  # ask the receivers we wait for to acknowledge
            return True
        if self._confirm_due(now):
            self._confirm_at = now + max(CONFIRM_PROBE, self.grtt)
            return True
        if self._probe_at is None or now < self._probe_at or not self.idle:
            return False
        self._probe_gap *= 2
        self._probe_at = now + self._probe_gap if self._probe_gap <= PROBE_LAST else None
        return True

    def next_timer(self, now: float) -> float | None:
        """When ``pull`` or ``probe_due`` has work again."""
        soonest: float | None = None
        if (
            self._repairs
            or (self._queue and self._blocked_since is None)
            or (self._deferred and self._rate_spare)
        ):
            soonest = self._bucket.ready_at(1500.0 if self._per_byte else 1.0)
        # A tail probe only matters once idle (or held): a busy sender would spin on it.
        probing = self.idle or self._blocked_since is not None
        if probing and self._probe_at is not None:
            soonest = self._probe_at if soonest is None else min(soonest, self._probe_at)
        if self.confirming and self.idle and self._confirm_at is not None:
            soonest = self._confirm_at if soonest is None else min(soonest, self._confirm_at)
        if self._blocked_since is not None and self._tracked:
            since = self._blocked_since
            stall = min(max(t.progressed_at, since) for t in self._tracked.values())
            stall += self.config.slow_timeout
            soonest = stall if soonest is None else min(soonest, stall)
        return soonest

    def _confirm_due(self, now: float) -> bool:
        return (
            self.confirming
            and self.idle
            and self._confirm_at is not None
            and now >= self._confirm_at
        )

    def take_slow_events(self) -> list[SlowReceiver]:
        events, self.slow_events = self.slow_events, []
        return events

    # --- internals ---------------------------------------------------------------------

    @property
    def _holdoff(self) -> float:
        """How long after a repair NACKs for it are taken to have crossed it."""
        return max(self.config.nack_backoff, self.grtt)

    @property
    def _rate_spare(self) -> bool:
        """No new data waits to go out (none queued, or ``wait`` holds it): deferred
        repairs may have the rate."""
        return not self._queue or self._blocked_since is not None

    def _bump(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

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
        rate = self._bucket.rate
        if rate is None:
            return None
        return rate * 8 if self._per_byte else rate

    def _depth_for(self, rate: float | None) -> float:
        # 5 ms of sending (at least 8 datagrams), so a timer wake-up sends a burst.
        return max((rate or 0.0) * 0.005, 8 * (1500 if self._per_byte else 1))

    def _set_rate(self, rate: float) -> None:
        self._bucket.set_rate(rate, self._depth_for(rate))

    def _spend(self, size: int) -> bool:
        return self._bucket.spend(float(size) if self._per_byte else 1.0)

    def _make_room(self, now: float) -> bool:
        """Slide the window until the next fragment fits; False when ``wait`` must hold."""
        # The message being sent is never slid past: a message larger than the window is
        # held whole until the next one starts, or its first fragments could pass out of
        # reach while its last are still going out (a 64 MiB message in a 32 MiB window lost
        # 2 runs in 8 at 20 % loss that way). The bound is max(window_bytes, max_message).
        while (
            self.window
            and self.window_bytes >= self.config.window_bytes
            and self.oldest < self._message_start
        ):
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


def _merged(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Runs (first, count) sorted, the overlapping ones joined."""
    merged: list[list[int]] = []
    for first, count in sorted(runs):
        if merged and first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], first + count)
        else:
            merged.append([first, first + count])
    return [(first, end - first) for first, end in merged]
