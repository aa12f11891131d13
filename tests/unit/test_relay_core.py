"""The relay's protocol core without sockets: forwarding rules, loops, bounds, hostile input."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from mcastkit.relay import (
    MAX_PROXIES,
    MAX_RELAYS,
    RelayCore,
    RelayKind,
    _endpoint,
    decode_relay,
    encode_relay,
)
from mcastkit.security import GroupKey, KeyRing

A, B, C = ("10.1.0.1", 5070), ("10.2.0.1", 5070), ("10.3.0.1", 5070)
MEMBER = ("10.1.0.9", 40000)


def _core(relay_id: int, *seeds: tuple[str, int], key: GroupKey | None = None) -> RelayCore:
    ring = None if key is None else KeyRing([key], os.urandom)
    return RelayCore(relay_id, tuple(seeds), 0.0, keyring=ring)


def _mesh(*cores: RelayCore, addresses: list[tuple[str, int]]) -> None:
    """Let every core's hellos reach the others (a few rounds, as the runtime would)."""
    for now in (0.0, 1.0, 2.0):
        for core, address in zip(cores, addresses, strict=True):
            for emit in core.tick(now):
                if emit.to in addresses:
                    target = cores[addresses.index(emit.to)]
                    target.relay_run(emit.datagrams, address, now)


def test_a_datagram_goes_to_every_other_site_once_and_never_further() -> None:
    a, b, c = _core(1, B), _core(2, C), _core(3, A)  # each names one: hellos make the mesh
    _mesh(a, b, c, addresses=[A, B, C])
    out = a.from_group(b"payload", MEMBER, 2.5)
    assert sorted(e.to for e in out) == sorted([B, C])  # type: ignore[type-var]
    for emit in out:
        target = b if emit.to == B else c
        emitted = target.relay_run(emit.datagrams, A, 2.5)
        assert [(e.datagrams, e.to) for e in emitted] == [([b"payload"], None)]  # group only
        assert emitted[0].via == (A, MEMBER)  # from the proxy standing for the member


def test_own_emissions_and_another_relays_site_are_never_forwarded() -> None:
    a, b = _core(1, B), _core(2, A)
    a.site_addresses, b.site_addresses = ["10.1.0.1"], ["10.2.0.1"]
    _mesh(a, b, addresses=[A, B])
    a.own_sources.add(("10.1.0.1", 33333))
    assert a.from_group(b"x", ("10.1.0.1", 33333), 2.5) == []  # our proxy's echo
    assert a.from_group(b"x", ("10.2.0.1", 44444), 2.5) == []  # b's proxy on our site
    assert a.counters["dropped:relay-on-this-site"] == 1


def test_a_relay_on_our_subnet_is_not_sent_to() -> None:
    import ipaddress

    a, twin = _core(1, ("10.1.0.2", 5070)), _core(2, A)
    a.site_addresses, twin.site_addresses = ["10.1.0.1"], ["10.1.0.2"]
    a.site_networks = [ipaddress.ip_network("10.1.0.0/24")]
    _mesh(a, twin, addresses=[A, ("10.1.0.2", 5070)])
    assert a.live_relays(2.5) == [] and a.from_group(b"x", MEMBER, 2.5) == []


def test_unicast_from_a_member_to_a_proxy_goes_back_to_the_origin() -> None:
    a, b = _core(1, B), _core(2, A)
    _mesh(a, b, addresses=[A, B])
    (emit,) = a.from_group(b"hello", MEMBER, 2.5)
    (shown,) = b.relay_run(emit.datagrams, A, 2.5)
    reply_from = ("10.2.0.5", 41000)
    assert shown.via is not None
    (back,) = b.from_proxy(shown.via, b"reply", reply_from, 2.6)
    assert back.to == A
    (delivered,) = a.relay_run(back.datagrams, B, 2.6)
    assert (delivered.datagrams, delivered.to) == ([b"reply"], MEMBER)
    assert delivered.via == (B, reply_from)


def test_data_from_a_relay_that_never_said_hello_is_dropped() -> None:
    a = _core(1, B)
    packet = encode_relay(RelayKind.GROUP, 9, _endpoint(MEMBER), b"x")
    assert a.from_relay(packet, ("10.9.9.9", 5070), 0.0) == []
    assert a.counters["dropped:unknown-relay"] == 1


def test_a_sealed_relay_refuses_another_key() -> None:
    key = GroupKey(bytes(range(32)))
    a, b = _core(1, B, key=key), _core(2, A, key=key)
    intruder = _core(3, A, key=GroupKey(bytes(32)))
    _mesh(a, b, addresses=[A, B])
    for emit in intruder.tick(5.0):
        assert a.relay_run(emit.datagrams, C, 5.0) == []
    assert a.counters["dropped:forged"] + a.counters["dropped:unknown-key"] >= 1
    assert C not in a.relays


def test_hellos_and_proxies_are_bounded() -> None:
    a = _core(1)
    for n in range(MAX_RELAYS + 50):
        hello = encode_relay(RelayKind.HELLO, 100 + n, b"\0\0", b"\0\0")
        a.from_relay(hello, (f"10.8.{n // 250}.{n % 250 + 1}", 5070), 0.0)
    assert len(a.relays) == MAX_RELAYS
    assert a.counters["dropped:relays-full"] == 50
    source = next(iter(a.relays))
    for n in range(MAX_PROXIES + 10):
        origin = (f"10.7.{n // 250}.{n % 250 + 1}", 1000 + n % 1000)
        a.from_relay(encode_relay(RelayKind.GROUP, 100, _endpoint(origin), b"x"), source, 0.5)
    assert len(a.proxies) == MAX_PROXIES
    assert a.counters["dropped:proxies-full"] == 10


@given(st.binary(max_size=600))
def test_decode_relay_never_raises(data: bytes) -> None:
    decode_relay(data)
    decode_relay(b"MKR1" + data)


@given(st.binary(max_size=300), st.integers(1, 3), st.integers(0, 255))
def test_any_relay_datagram_is_taken_or_dropped_never_raised(
    body: bytes, kind: int, hop: int
) -> None:
    a = _core(1, B)
    a.from_relay(encode_relay(RelayKind.HELLO, 2, b"\0\0", b"\0\0"), B, 0.0)
    a.from_relay(encode_relay(RelayKind(kind), 2, body, hop=hop), B, 0.0)
    a.relay_run([encode_relay(RelayKind(kind), 2, body, hop=hop), b"MKR1" + body], B, 0.0)


def test_unicast_goes_only_to_members_of_the_site() -> None:
    import ipaddress

    a, b = _core(1, B), _core(2, A)
    a.site_addresses = ["10.1.0.1"]
    a.site_networks = [ipaddress.ip_network("10.1.0.0/24")]
    _mesh(a, b, addresses=[A, B])
    elsewhere = encode_relay(
        RelayKind.UNICAST, 2, _endpoint(("10.2.0.5", 1)), _endpoint(("8.8.8.8", 53)), b"x"
    )
    assert a.from_relay(elsewhere, B, 2.5) == []
    assert a.counters["dropped:not-on-site"] == 1
    here = encode_relay(RelayKind.UNICAST, 2, _endpoint(("10.2.0.5", 1)), _endpoint(MEMBER), b"x")
    assert [e.to for e in a.from_relay(here, B, 2.5)] == [MEMBER]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("group"), st.integers(0, 3), st.binary(max_size=40)),
            st.tuples(st.just("raw"), st.integers(0, 3), st.binary(max_size=40)),
        ),
        max_size=30,
    )
)
def test_the_run_path_emits_what_the_one_by_one_path_emits(items: list) -> None:
    """``relay_run`` (the fast path) and ``from_relay`` per datagram agree on any input."""
    origins = [("10.2.0.5", 1000), ("10.2.0.6", 1001), ("fd00::7", 1002), ("10.2.0.5", 1003)]
    datagrams = []
    for kind, index, body in items:
        if kind == "group":
            datagrams.append(encode_relay(RelayKind.GROUP, 2, _endpoint(origins[index]), body))
        else:
            datagrams.append(b"MKR1" + bytes([2, 1, 0, 0]) + (2).to_bytes(8, "big") + body)
    cores = []
    for _ in range(2):
        core = _core(1, B)
        core.relay_run([encode_relay(RelayKind.HELLO, 2, b"\0\0", b"\0\0")], B, 0.0)
        cores.append(core)
    fast = cores[0].relay_run(datagrams, B, 0.5)
    slow = [e for d in datagrams for e in cores[1].from_relay(d, B, 0.5)]

    def flat(emits: list) -> list:
        return sorted((e.via, e.to, d) for e in emits for d in e.datagrams)

    assert flat(fast) == flat(slow)
    assert cores[0].counters["emitted"] == cores[1].counters["emitted"]
