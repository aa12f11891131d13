"""Stateful hypothesis tests: hostile sequences of inputs, the accounting checked after each step.

The stream receiver's memory is recomputed from its structures and compared with what it
reports; the session's running total across senders is compared with the sum of its streams;
both must stay within their limits (plus one fragment and, per sender, one gap range).
"""

from __future__ import annotations

import craft
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mcastkit.reliable import (
    FRAGMENT_COST,
    GAP_COST,
    LOST_COST,
    RDATA_HEAD,
    ReliableConfig,
    StreamReceiver,
)
from mcastkit.session import Session

LIMIT = 30_000
CONFIG = ReliableConfig(receiver_memory=LIMIT, max_message=20_000, repair_timeout=0.5)
seqs = st.integers(1, 3000) | st.integers(1, 2**40)
chunks = st.binary(max_size=1500)


class StreamReceiverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.receiver = StreamReceiver(1, 1, CONFIG, random=lambda: 0.5)
        self.now = 0.0

    @rule(seq=seqs, length=st.integers(0, 30_000), offset=st.integers(0, 30_000), chunk=chunks)
    def fragment(self, seq: int, length: int, offset: int, chunk: bytes) -> None:
        self.receiver.on_data(RDATA_HEAD.pack(seq, length, offset) + chunk, "t", self.now)

    @rule(seq=st.integers(1, 3000), chunk=chunks)
    def message(self, seq: int, chunk: bytes) -> None:
        self.receiver.on_data(RDATA_HEAD.pack(seq, len(chunk), 0) + chunk, "t", self.now)

    @rule(oldest=seqs, next_seq=seqs)
    def state(self, oldest: int, next_seq: int) -> None:
        self.receiver.on_state(oldest, next_seq, self.now)

    @rule(runs=st.lists(st.tuples(st.integers(1, 4000), st.integers(1, 2**20)), max_size=64))
    def foreign_nack(self, runs: list[tuple[int, int]]) -> None:
        self.receiver.on_foreign_nack(runs, self.now)

    @rule(seconds=st.floats(0.001, 2.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for run in self.receiver.handle_timer(self.now):
            assert len(run) <= 64 and all(count > 0 for _, count in run)
        self.receiver.delivered.clear()

    @invariant()
    def accounting_is_true(self) -> None:
        r = self.receiver
        held = sum(len(item[3]) for item in r.buffer.values())
        assert held == r.buffered_bytes
        partial = r._partial_bytes()
        real = (
            held
            + FRAGMENT_COST * len(r.buffer)
            + GAP_COST * len(r.gaps)
            + LOST_COST * len(r._lost)
            + partial
        )
        assert r.memory == real
        assert r.memory <= LIMIT + 1500 + FRAGMENT_COST + GAP_COST
        assert partial <= CONFIG.max_message

    @invariant()
    def gaps_are_sorted_disjoint_and_counted(self) -> None:
        gaps = self.receiver.gaps
        assert gaps.starts == sorted(gaps.starts)
        previous_end = 0
        total = 0
        for first in gaps.starts:
            gap = gaps.by_first[first]
            assert gap.first == first and gap.end > first >= previous_end
            assert first >= self.receiver.next_deliver
            previous_end = gap.end
            total += gap.end - first
        assert total == gaps.count
        assert not any(seq in gaps for seq in self.receiver.buffer)
        assert self.receiver._lost_starts == sorted(self.receiver._lost)


class SessionMachine(RuleBasedStateMachine):
    """Frames from a handful of senders; the budget across them holds."""

    BUDGET = 60_000

    def __init__(self) -> None:
        super().__init__()
        self.session = Session(
            node_id=0xAAAA,
            incarnation=1,
            name="v",
            now=0.0,
            random_bytes=lambda n: bytes(n),
            reliable=CONFIG,
            receive_budget=self.BUDGET,
            max_peers=8,
        )
        self.session.start(0.0)
        self.now = 0.0
        self.frame_seq = 0

    def _deliver(self, data: bytes) -> None:
        self.frame_seq += 1
        self.session.receive_datagram(data, ("10.0.0.9", 1), self.now)
        self.session.datagrams_to_send()
        while self.session.next_event() is not None:
            pass

    @rule(sender=st.integers(1, 12), seq=seqs, offset=st.integers(0, 3000), chunk=chunks)
    def rdata(self, sender: int, seq: int, offset: int, chunk: bytes) -> None:
        length = offset + len(chunk) + 10
        self._deliver(craft.rdata(sender, seq, length, offset, chunk, frame_seq=self.frame_seq + 1))

    @rule(sender=st.integers(1, 12), kind=st.sampled_from([craft.GOODBYE, craft.HEARTBEAT]))
    def control(self, sender: int, kind: int) -> None:
        position = (self.frame_seq * 7).to_bytes(8, "big")
        self._deliver(craft.frame(kind, sender, self.frame_seq + 1, position))

    @rule(sender=st.integers(1, 12), oldest=seqs, next_seq=seqs)
    def rstate(self, sender: int, oldest: int, next_seq: int) -> None:
        body = oldest.to_bytes(8, "big") + next_seq.to_bytes(8, "big")
        self._deliver(craft.frame(craft.RSTATE, sender, self.frame_seq + 1, body))

    @rule(seconds=st.floats(0.001, 3.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.session.handle_timer(self.now)
        self.session.datagrams_to_send()
        while self.session.next_event() is not None:
            pass

    @invariant()
    def budget_holds(self) -> None:
        streams = self.session.streaming.inbound.receivers.values()
        total = sum(stream.memory for stream in streams)
        assert self.session.streaming.inbound.memory == total
        slack = len(self.session.streaming.inbound.receivers) * GAP_COST + 1500 + FRAGMENT_COST
        assert total <= self.BUDGET + slack
        assert len(self.session.peers) <= 8


TestStreamReceiver = StreamReceiverMachine.TestCase
TestStreamReceiver.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestSession = SessionMachine.TestCase
TestSession.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
