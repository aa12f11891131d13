"""Repair timing that follows the round trip (NORM's GRTT), on a simulated link with delay.

Sessions run on fake time over a network that delays every datagram by a fixed one-way
time and drops the first copy of chosen fragments. The first loss falls before the receivers
have heard the measured round trip, so they use the LAN defaults (10 ms back-off, 50 ms
repeat): over a 200 ms round trip each asks again before the repair can arrive, and only
the sender's hold-off (a round trip by then) keeps those NACKs from becoming repairs.
Once the receivers know it too, a loss costs one repair and one NACK per receiver at most.
"""

from __future__ import annotations

import heapq
import itertools
import random

import pytest
from fakenet import FakeNet

from mcastkit.reliable import ACK_ECHO, RDATA_HEAD, RSTATE_TIMED, ReliableConfig
from mcastkit.reliable.codec import MAX_GRTT
from mcastkit.reliable.receiver import StreamReceiver
from mcastkit.reliable.sender import StreamSender
from mcastkit.session import Session
from mcastkit.wire import Flag, FrameType, decode_frame_untrusted


class DelayNet(FakeNet):
    """FakeNet's sessions on a link with a fixed one-way delay; ``lose`` holds RDATA seqs
    whose first (non-repair) copy is dropped on the way to every receiver."""

    def __init__(self, one_way: float, receivers: int, seed: int = 3) -> None:
        super().__init__(seed=seed)
        self.one_way = one_way
        self.lose: set[int] = set()
        # (arrival time, order, target, datagram, source): the order keeps ties first-in first
        self.queue: list[tuple[float, int, tuple[str, int], bytes, tuple[str, int]]] = []
        self.order = itertools.count()
        self.sent: dict[str, int] = {"nacks": 0, "repairs": 0, "echoes": 0}
        self.sender = self._add("sender")
        self.receivers = [self._add(f"r{n}") for n in range(receivers)]

    def _add(self, name: str) -> Session:
        session = self.add(name, heartbeat=0.5, reliable=ReliableConfig(adaptive_rate=False))
        session.start(self.now)
        return session

    def _emit(self, source: tuple[str, int], session: Session) -> None:
        for data, destination in session.datagrams_to_send(self.now):
            frame = decode_frame_untrusted(data)
            assert not isinstance(frame, str)
            if frame.type == FrameType.NACK and destination is None:
                self.sent["nacks"] += 1
            if frame.type == FrameType.RDATA and frame.flags & Flag.REPAIR:
                self.sent["repairs"] += 1
            if frame.type == FrameType.ACK and len(frame.payload) == ACK_ECHO.size:
                self.sent["echoes"] += 1
            first_copy_lost = (
                frame.type == FrameType.RDATA
                and not frame.flags & Flag.REPAIR
                and RDATA_HEAD.unpack_from(frame.payload)[0] in self.lose
            )
            targets = self.sessions if destination is None else [destination]
            for target in targets:
                if target == source or first_copy_lost:
                    continue
                arrival = self.now + self.one_way
                heapq.heappush(self.queue, (arrival, next(self.order), target, data, source))

    def run(self, seconds: float, step: float = 0.001) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + step, 6)
            while self.queue and self.queue[0][0] <= self.now:
                _, _, target, data, source = heapq.heappop(self.queue)
                self.sessions[target].receive_datagram(data, source, self.now)
            for address, session in self.sessions.items():
                due = session.next_timer()
                if due is not None and due <= self.now:
                    session.handle_timer(self.now)
                self._emit(address, session)
                while session.next_event() is not None:
                    pass


@pytest.fixture
def net() -> DelayNet:
    return DelayNet(one_way=0.1, receivers=5)


def _delivered(session: Session) -> int:
    stats = session.reliable_stats()["receivers"]
    return sum(s["next_seq"] for s in stats.values())


def test_the_sender_measures_the_round_trip_and_tells_the_receivers(net: DelayNet) -> None:
    net.run(1.0)  # hellos
    net.sender.publish("t", b"x" * 100, net.now, reliable=True)
    net.run(0.6)
    stats = net.sender.reliable_stats()["sender"]
    assert stats["grtt_ms"] == pytest.approx(200, abs=3)  # 2 x 100 ms, to the step
    assert len(stats["rtt_ms"]) == 5 and net.sent["echoes"] >= 5
    net.sender.publish("t", b"y" * 100, net.now, reliable=True)
    net.run(0.5)  # the next probe carries the measurement
    for receiver in net.receivers:
        (stream,) = receiver.reliable_stats()["receivers"].values()
        assert stream["grtt_ms"] == pytest.approx(200, abs=3)


def test_a_loss_costs_one_repair_once_the_round_trip_is_known(net: DelayNet) -> None:
    net.run(1.0)
    # Before any measurement: fixed LAN timing over a 200 ms round trip.
    net.lose = {1}
    net.sender.publish("t", b"a" * 100, net.now, reliable=True)
    net.run(1.5)
    before = dict(net.sent)
    assert all(_delivered(r) == 2 for r in net.receivers)  # repaired in the end
    assert before["nacks"] >= 10, before  # every receiver asked again before it could come
    held = net.sender.reliable_stats()["sender"].get("repairs-held-off", 0)
    # The echo was back before the first NACK: the sender's hold-off (a round trip, not
    # 10 ms) already ignored the NACKs that crossed its repair.
    assert before["repairs"] == 1 and held >= 1, (before, held)
    # Measured now: the same loss again.
    net.lose = {2}
    net.sender.publish("t", b"b" * 100, net.now, reliable=True)
    net.run(2.0)
    after = {k: net.sent[k] - before[k] for k in ("nacks", "repairs")}
    assert all(_delivered(r) == 3 for r in net.receivers)
    assert after["repairs"] == 1, after
    # Each receiver asks once at most (a back-off of a round trip lets one receiver's NACK
    # hold back some others'), where it asked two or three times before.
    assert after["nacks"] <= len(net.receivers) < before["nacks"] / 2, (before, after)


def test_echoes_are_rate_limited_and_forged_round_trips_are_bounded() -> None:
    config = ReliableConfig()
    receiver = StreamReceiver(1, 1, config, random.Random(1).random)
    assert receiver.on_probe(50_000, 0.0) is True
    assert receiver.on_probe(50_000, 0.1) is False  # within ECHO_EVERY: no echo
    assert receiver.on_probe(0xFFFFFFFF, 0.3) is True
    assert receiver.grtt == MAX_GRTT  # a forged "71 minutes" is taken as the cap
    assert receiver.nack_backoff == MAX_GRTT and receiver.nack_repeat == 3 * MAX_GRTT
    assert receiver.on_probe(0, 0.6) and receiver.nack_backoff == config.nack_backoff

    sender = StreamSender(config, 0.0)
    stamp = sender.stamp(10.0)
    sender.on_echo(7, stamp, 0, 10.004)
    assert sender.grtt == pytest.approx(0.004)
    sender.on_echo(8, stamp, 0, 10.0 + 2 * MAX_GRTT)  # stale or forged: refused
    sender.on_echo(8, (stamp + 5_000_000) & 0xFFFFFFFF, 0, 10.0)  # from the future: refused
    assert sender.counters["rtt-samples-refused"] == 2 and set(sender.rtts) == {7}
    sender.on_echo(7, sender.stamp(11.0), 0, 11.001)  # shorter: comes down slowly
    assert 0.001 < sender.grtt < 0.004
    sender.forget_peer(7)
    assert sender.grtt == 0.0


def test_old_peers_without_timed_state_still_interoperate() -> None:
    """A 16-byte RSTATE and a 20-byte ACK (before round trips were measured) are taken."""
    assert RSTATE_TIMED.size == 24 and ACK_ECHO.size == 28
    net = DelayNet(one_way=0.001, receivers=1)
    net.run(0.5)
    receiver = net.receivers[0]
    from mcastkit.reliable import ACK, RSTATE

    state = net.sender.framer.frame(FrameType.RSTATE, "", RSTATE.pack(1, 1), flags=0, unicast=False)
    receiver.receive_datagram(state, ("10.0.0.1", 5000), net.now)
    net.sender.publish("t", b"z", net.now, reliable=True)
    net.run(0.1)
    ack = receiver.framer.frame(
        FrameType.ACK, "", ACK.pack(net.sender.node_id, net.sender.incarnation, 1),
        flags=0, unicast=True,
    )  # fmt: skip
    net.sender.receive_datagram(ack, ("10.0.0.2", 5000), net.now)
    assert receiver.counters["dropped"] == 0 and net.sender.counters["dropped"] == 0
