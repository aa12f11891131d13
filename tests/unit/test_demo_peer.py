"""The demo's logic with no sockets: a fake group that hands each text to every other peer."""

from __future__ import annotations

from mcastkit.demo import DemoPeer


def _flood(peers: list[DemoPeer], first: list[tuple[DemoPeer, str]]) -> int:
    """Deliver each message to every other peer (the Node drops our own) until quiet."""
    queue = list(first)
    delivered = 0
    while queue:
        sender, text = queue.pop(0)
        for peer in peers:
            if peer is sender:
                continue
            delivered += 1
            _event, reply = peer.receive(sender.node_id, sender.name, text, "fake:1")
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
        assert peer.heard_at_least(4)


def test_late_starter_completes_the_handshake_without_the_first_hello() -> None:
    early, late = DemoPeer("early", "e"), DemoPeer("late", "l")
    # early's hello went out before late joined: only late's hello is delivered.
    messages = _flood([early, late], [(late, late.announcement())])
    assert early.greeted_by == {"late": "l"} and early.answered_by == {"late": "l"}
    assert late.greeted_by == {"early": "e"} and late.answered_by == {"early": "e"}
    assert messages <= 3  # bounded: hello, reply, reply back; no storm


def test_replies_to_others_are_overheard_not_answered() -> None:
    a, b, c = DemoPeer("a", "a"), DemoPeer("b", "b"), DemoPeer("c", "c")
    _event, reply = b.receive("a", "a", a.announcement(), "x")
    assert reply == "reply a"
    event, again = c.receive("b", "b", reply, "x")
    assert event.kind == "overheard" and again is None


def test_invalid_messages_are_counted_not_answered() -> None:
    peer = DemoPeer("me", "me")
    for text in ("", "HELLO", "reply", "replyme", "\x00\xff", "x" * 5000):
        event, reply = peer.receive("other", "o", text, "x")
        assert event.kind == "invalid" and reply is None
    assert peer.invalid == 6
    assert peer.greeted_by == {} and peer.answered_by == {}


def test_repeats_are_answered_but_told_once_and_parting_answers_go_to_every_greeter() -> None:
    a, b = DemoPeer("aaaa", "a"), DemoPeer("bbbb", "b")
    first, reply = a.receive("bbbb", "b", "hello", "10.0.0.2:1")
    again, reply_again = a.receive("bbbb", "b", "hello", "10.0.0.2:1")
    assert (first.kind, again.kind) == ("greeted", "repeated")
    assert reply == reply_again == "reply bbbb"  # a lost answer is answered again
    assert [b.receive("aaaa", "a", reply, "10.0.0.1:1")[0].kind for _ in range(2)] == [
        "answered",
        "repeated",
    ]
    assert a.parting_replies() == ["reply bbbb"]
    assert DemoPeer("cccc", "c").parting_replies() == []
