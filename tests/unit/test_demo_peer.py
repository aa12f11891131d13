"""The demo protocol with no sockets: a fake link that delivers to every peer, itself included."""

from __future__ import annotations

import json

from mcastkit.demo import DemoPeer


def _flood(peers: list[DemoPeer], first: list[tuple[DemoPeer, bytes]]) -> int:
    """Deliver every datagram to every peer (multicast with loopback) until quiet."""
    queue = list(first)
    delivered = 0
    while queue:
        _sender, data = queue.pop(0)
        for peer in peers:
            delivered += 1
            _event, reply = peer.receive(data, "fake")
            if reply is not None:
                queue.append((peer, reply))
    return delivered


def test_everyone_greets_and_answers_everyone() -> None:
    peers = [DemoPeer(f"id{n}", f"node-{n}") for n in range(5)]
    _flood(peers, [(p, p.announcement()) for p in peers])
    for peer in peers:
        others = {p.node_id for p in peers} - {peer.node_id}
        assert set(peer.greeted_by) == others
        assert set(peer.answered_by) == others
        assert peer.own_seen >= 1


def test_own_messages_are_recognised_by_id_and_not_answered() -> None:
    peer = DemoPeer("me", "me")
    event, reply = peer.receive(peer.announcement(), "lo")
    assert event.kind == "own" and reply is None
    assert peer.greeted_by == {}


def test_late_starter_completes_the_handshake_without_the_first_hello() -> None:
    early, late = DemoPeer("early", "e"), DemoPeer("late", "l")
    early.receive(early.announcement(), "lo")  # only the sender heard its own hello
    messages = _flood([early, late], [(late, late.announcement())])
    assert early.greeted_by == {"late": "l"} and early.answered_by == {"late": "l"}
    assert late.greeted_by == {"early": "e"} and late.answered_by == {"early": "e"}
    assert messages < 12  # bounded: no reply storm


def test_replies_to_others_are_overheard_not_answered() -> None:
    a, b, c = DemoPeer("a", "a"), DemoPeer("b", "b"), DemoPeer("c", "c")
    _event, reply = b.receive(a.announcement(), "x")
    assert reply is not None
    event, again = c.receive(reply, "x")
    assert event.kind == "overheard" and again is None


def test_invalid_datagrams_are_counted_not_raised() -> None:
    peer = DemoPeer("me", "me")
    junk = [
        b"",
        b"\xff\xfe",
        b"[]",
        b"{}",
        json.dumps(
            {"app": "mcastkit-demo", "v": 2, "type": "hello", "id": "x", "name": "y"}
        ).encode(),
        json.dumps(
            {"app": "mcastkit-demo", "v": 1, "type": "hello", "id": 5, "name": "y"}
        ).encode(),
        json.dumps(
            {"app": "mcastkit-demo", "v": 1, "type": "reply", "id": "x", "name": "y"}
        ).encode(),
        b"x" * 5000,
    ]
    for data in junk:
        event, reply = peer.receive(data, "x")
        assert event.kind == "invalid" and reply is None
    assert peer.invalid == len(junk)
