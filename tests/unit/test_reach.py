"""Members beyond multicast, on the fake link: seeds, gossip, copies, and their bounds."""

from __future__ import annotations

import ipaddress

from fakenet import FakeNet
from hypothesis import given
from hypothesis import strategies as st

from mcastkit.events import Failed, Joined, Message
from mcastkit.reach import GOSSIP_ENTRIES, MAX_CONTACTED, decode_peers, encode_peers
from mcastkit.wire import Flag, Frame, FrameType, encode_frame


def _names(net: FakeNet, session: object) -> set[str]:
    return {peer.name for peer in session.peers.values()}  # type: ignore[attr-defined]


def test_one_seed_leads_to_every_member_where_no_multicast_is_carried() -> None:
    net = FakeNet()
    first = net.add("m0")
    seed = net.address_of(first)
    members = [first] + [net.add(f"m{i}", seeds=(seed,)) for i in range(1, 8)]
    net.beyond_multicast.update(net.sessions)  # nothing multicast arrives anywhere
    for member in members:
        member.start(net.now)
        net.flush()
    net.run(0.5)
    for i, member in enumerate(members):
        assert _names(net, member) == {f"m{j}" for j in range(8) if j != i}
        assert all(peer.path == "unicast" for peer in member.peers.values())
    # Data reaches every member by unicast copies, exactly once each.
    members[3].publish("t", b"hello", net.now)
    net.flush()
    for member in members:
        got = [e for e in net.of(member, Message) if e.topic == "t"]
        assert len(got) == (0 if member is members[3] else 1)
    # And stays: no one fails over a long quiet spell (heartbeats travel as copies).
    net.run(10)
    assert not any(net.of(member, Failed) for member in members)
    assert all(len(member.peers) == 7 for member in members)


def test_a_member_that_leaves_or_dies_is_seen_by_unicast_peers_too() -> None:
    net = FakeNet()
    a = net.add("a")
    b = net.add("b", seeds=(net.address_of(a),))
    c = net.add("c", seeds=(net.address_of(a),))
    net.beyond_multicast.update(net.sessions)
    for member in (a, b, c):
        member.start(net.now)
    net.run(1)
    net.muted.add(net.address_of(c))  # c dies without a word
    net.run(4)
    assert [e.peer.name for e in net.of(a, Failed)] == ["c"]
    assert [e.peer.name for e in net.of(b, Failed)] == ["c"]


def test_copies_stop_once_multicast_is_heard_both_ways() -> None:
    net = FakeNet()
    a = net.add("a")
    b = net.add("b", seeds=(net.address_of(a),))  # a seed on a LAN where multicast works
    for member in (a, b):
        member.start(net.now)
    net.flush()
    assert b.peers[a.node_id].copies_until > net.now  # asked at once: unknown yet
    net.run(5)
    assert a.reach.targets == [] and b.reach.targets == []
    assert all(p.path == "multicast" for s in (a, b) for p in s.peers.values())
    sent = a.counters["sent:data"]
    a.publish("t", b"x", net.now)
    out = a.datagrams_to_send(net.now)
    assert [to for _, to in out] == [None]  # one multicast datagram, no copy
    assert a.counters["sent:data"] == sent + 1


def test_an_asymmetric_path_is_repaired_before_failure_detection() -> None:
    net = FakeNet()
    a = net.add("a")
    b = net.add("b", seeds=(net.address_of(a),))
    for member in (a, b):
        member.start(net.now)
    net.run(5)
    # From now on a's multicast no longer reaches b (a one-way filter); b's still reaches a.
    net.multicast_cut.add((net.address_of(a), net.address_of(b)))
    net.run(8)
    assert not net.of(b, Failed) and a.node_id in b.peers
    assert b.peers[a.node_id].path == "unicast"
    a.publish("t", b"after", net.now)
    net.flush()
    assert [e.payload for e in net.of(b, Message) if e.topic == "t"] == [b"after"]


def test_without_seeds_nothing_changes_on_a_multicast_lan() -> None:
    net = FakeNet()
    members = [net.add(f"m{i}") for i in range(3)]
    for member in members:
        member.start(net.now)
    net.run(5)
    for member in members:
        assert member.counters["sent:peers"] == 0
        assert not any(p.watched or p.asking for p in member.peers.values())
        assert member.reach.targets == []


def test_peers_lists_from_strangers_are_refused_and_bounded() -> None:
    net = FakeNet()
    victim = net.add("victim")
    victim.start(net.now)
    net.flush()
    entries = [(n + 1, (f"192.0.2.{n % 250 + 1}", 1000 + n)) for n in range(GOSSIP_ENTRIES)]
    payload = encode_peers(entries)
    forged = encode_frame(Frame(FrameType.PEERS, Flag.UNICAST, 77, 1, 1, 0, "", payload))
    victim.receive_datagram(forged, ("198.51.100.9", 4000), net.now, via_group=False)
    assert victim.counters["dropped:peers-from-non-member"] == 1
    assert not [to for _, to in victim.datagrams_to_send(net.now) if to is not None and
                to[0].startswith("192.0.2.")]  # fmt: skip
    # A member's list: at most one hello per listed address, within the answer budget.
    member = net.add("member")
    member.start(net.now)
    net.flush()
    assert member.node_id in victim.peers
    for round_ in range(3):  # the same list again and again costs nothing more
        victim.reach.on_peers(encode_peers(entries), victim.node_id, victim.peers, net.now)
        hellos = [
            to for _, to in victim.datagrams_to_send(net.now) if to and to[0].startswith("192.0.2.")
        ]
        assert len(hellos) == (GOSSIP_ENTRIES if round_ == 0 else 0)
    for n in range(MAX_CONTACTED + 100):
        victim.reach.contact((str(ipaddress.ip_address(0x0A000000 + n)), 1))
    assert len(victim.reach.contacted) == MAX_CONTACTED


def test_joined_is_reported_once_per_member_found_by_gossip() -> None:
    net = FakeNet()
    a = net.add("a")
    others = [net.add(n, seeds=(net.address_of(a),)) for n in "bcd"]
    net.beyond_multicast.update(net.sessions)
    for member in (a, *others):
        member.start(net.now)
    net.run(12)  # gossip rounds come and go: nobody joins twice
    for member in (a, *others):
        names = [e.peer.name for e in net.of(member, Joined)]
        assert sorted(names) == sorted(set(names)) and len(names) == 3


@given(st.binary(max_size=2000))
def test_decode_peers_never_raises(data: bytes) -> None:
    result = decode_peers(data)
    assert result is None or len(result) <= GOSSIP_ENTRIES


@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**64 - 1),
            st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
            st.integers(1, 65535),
        ),
        max_size=GOSSIP_ENTRIES,
    )
)
def test_peers_payload_round_trips(entries: list[tuple[int, object, int]]) -> None:
    pairs = [(node_id, (str(address), port)) for node_id, address, port in entries]
    assert decode_peers(encode_peers(pairs)) == pairs


def test_a_peer_heard_from_an_address_it_does_not_claim_is_behind_a_relay() -> None:
    net = FakeNet()
    direct = net.add("direct", meta={"_ua": ["10.0.0.1:5000"]})  # its FakeNet address
    proxied = net.add("proxied", meta={"_ua": ["192.0.2.7:5000"]})  # elsewhere: relayed
    plain = net.add("plain")  # claims nothing (an older member): never called relayed
    watcher = net.add("watcher")
    for member in (direct, proxied, plain, watcher):
        member.start(net.now)
    net.flush()
    paths = {peer.name: peer.path for peer in watcher.peers.values()}
    assert paths == {"direct": "multicast", "proxied": "relay", "plain": "multicast"}
    assert all("_ua" not in peer.meta for peer in watcher.peers.values())


def test_a_peer_asking_for_copies_is_proving_until_it_echoed_the_cookie() -> None:
    # publish --peers counts a peer beyond multicast once its copies flow: between our
    # challenge and its echo, a message published would not reach it (a CI run lost all 5).
    net = FakeNet()
    seed = net.add("seed")
    late = net.add("late", seeds=(net.address_of(seed),))
    net.beyond_multicast.update(net.sessions)
    seed.start(net.now)
    late.start(net.now)
    hello = late.datagrams_to_send(net.now)  # its unicast hello, asking for copies
    for data, _to in hello:
        seed.receive_datagram(data, net.address_of(late), net.now, via_group=False)
    peer = seed.peers[late.node_id]
    assert peer.hello_seen and peer.proving and not peer.reached
    net.flush()  # the challenge goes out, its echo comes back
    net.run(0.1)
    assert not peer.proving and peer.reached and peer.copies_until > net.now
