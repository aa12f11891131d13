"""Waiting for acknowledgements (Node.flush(acknowledged=True)), on the sans-I/O session."""

from __future__ import annotations

import random

from fakenet import FakeNet

from mcastkit.events import Message
from mcastkit.session import Session
from mcastkit.wire import FrameType

STEP = 0.001


def _delivered(net: FakeNet, session: Session) -> list[bytes]:
    return [m.payload for m in net.of(session, Message) if m.reliable]


def _settle(net: FakeNet, sender: Session, limit: float = 10.0) -> None:
    end = net.now + limit
    while not sender.streaming.settled() and net.now < end:
        net.run(STEP, step=STEP)


def test_acknowledged_only_once_each_receiver_has_everything_under_loss() -> None:
    net = FakeNet(loss=0.2, seed=21)
    sender, receivers = net.group(3)
    rng = random.Random(5)
    payloads = [rng.randbytes(rng.choice([10, 1400, 9000])) for _ in range(40)]
    for payload in payloads:
        sender.publish("t", payload, net.now, reliable=True)
    _settle(net, sender)
    members = [r.node_id for r in receivers]
    sender.streaming.confirm(True)
    for _ in range(20_000):
        waiting = sender.streaming.unacknowledged(members)
        for receiver in receivers:
            if receiver.node_id not in waiting:  # acknowledged: it must really have it all
                assert _delivered(net, receiver) == payloads
        if not waiting:
            break
        net.run(STEP, step=STEP)
    assert sender.streaming.unacknowledged(members) == []
    assert net.now < 10


def test_a_deaf_receiver_is_waited_for_until_it_fails_and_then_reported() -> None:
    net = FakeNet(seed=22)
    sender, (hearing, deaf) = net.group(2, failure_timeout=3.0)
    net.deaf.add(net.address_of(deaf))
    sender.publish("t", b"x" * 5000, net.now, reliable=True)
    _settle(net, sender)
    members = [hearing.node_id, deaf.node_id]
    sender.streaming.confirm(True)
    net.run(1.0, step=STEP)
    assert sender.streaming.unacknowledged(members) == [deaf.node_id]
    net.muted.add(net.address_of(deaf))  # then it goes silent: failed, no longer waited for
    net.run(5.0, step=0.01)
    assert deaf.node_id not in sender.peers
    assert sender.streaming.awaited(members) == []  # no longer waited for
    assert sender.streaming.unacknowledged(members) == [deaf.node_id]  # and said so


def test_a_receiver_that_says_goodbye_is_neither_awaited_nor_reported() -> None:
    net = FakeNet(seed=26)
    sender, (staying, leaving) = net.group(2)
    net.deaf.add(net.address_of(leaving))
    sender.publish("t", b"x" * 5000, net.now, reliable=True)
    _settle(net, sender)
    members = [staying.node_id, leaving.node_id]
    sender.streaming.confirm(True)
    net.run(0.5, step=STEP)
    assert sender.streaming.awaited(members) == [leaving.node_id]
    leaving.close(net.now)
    net.flush()
    assert sender.streaming.awaited(members) == []
    assert sender.streaming.unacknowledged(members) == []


def test_confirming_probes_are_paced_and_stop_when_told() -> None:
    net = FakeNet(seed=23)
    sender, (receiver,) = net.group(1)
    net.deaf.add(net.address_of(receiver))  # never answers: the sender keeps asking
    sender.publish("t", b"y" * 3000, net.now, reliable=True)
    _settle(net, sender)
    net.run(3.0, step=STEP)  # the tail probes (5 ms doubling to 1 s) are over
    before = sender.counters["sent:rstate"]
    sender.streaming.confirm(True)
    net.run(1.0, step=STEP)
    asked = sender.counters["sent:rstate"] - before
    assert 10 <= asked <= 22  # one every 50 ms (a LAN's round trip is shorter), + heartbeat's
    sender.streaming.confirm(False)
    before = sender.counters["sent:rstate"]
    net.run(1.0, step=STEP)
    assert sender.counters["sent:rstate"] <= before + 1  # the heartbeat's only


def test_a_member_that_came_after_the_stream_acknowledges_without_history() -> None:
    net = FakeNet(seed=24)
    sender, (early,) = net.group(1)
    for number in range(5):
        sender.publish("t", bytes([number]) * 2000, net.now, reliable=True)
    _settle(net, sender)
    late = net.add("late")
    late.start(net.now)
    net.run(0.2, step=STEP)
    sender.streaming.confirm(True)
    net.run(0.5, step=STEP)
    assert sender.streaming.unacknowledged([early.node_id, late.node_id]) == []
    assert _delivered(net, late) == []  # nothing was asked for or replayed
    assert late.counters["sent:nack"] == 0


def test_an_ack_for_seqs_never_sent_does_not_count() -> None:
    net = FakeNet(seed=25)
    sender, (receiver,) = net.group(1)
    net.deaf.add(net.address_of(receiver))
    sender.publish("t", b"z" * 4000, net.now, reliable=True)
    _settle(net, sender)
    stream = sender.streaming.stream
    assert stream is not None
    stream.on_ack(receiver.node_id, stream.next_seq + 100, net.now)  # a forged future ack
    assert sender.streaming.unacknowledged([receiver.node_id]) == [receiver.node_id]


def test_a_frame_overtaken_by_the_goodbye_does_not_bring_the_member_back() -> None:
    net = FakeNet(seed=27)
    sender, (staying, leaving) = net.group(2)
    leaving_address = net.address_of(leaving)
    held: list[bytes] = []

    def hold_back(data: bytes, to: tuple[str, int]) -> bool:
        # leaving's ACKs to the sender are held back: they will arrive after its goodbye
        if data[3] == FrameType.ACK and int.from_bytes(data[8:16], "big") == leaving.node_id:
            held.append(data)
            return True
        return False

    sender.publish("t", b"x" * 5000, net.now, reliable=True)
    _settle(net, sender)
    members = [staying.node_id, leaving.node_id]
    net.drop_if = hold_back
    sender.streaming.confirm(True)
    net.run(0.3, step=STEP)
    leaving.close(net.now)
    net.flush()
    assert leaving.node_id not in sender.peers
    for data in held:  # sent before the goodbye, they arrive after it
        sender.receive_datagram(data, leaving_address, net.now)
    assert held and leaving.node_id in sender.peers  # a phantom member again (session)
    assert sender.streaming.awaited(members) == []  # but not waited for
    assert sender.streaming.unacknowledged(members) == []  # nor reported
