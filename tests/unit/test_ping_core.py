"""The ping core with a fake clock and a fake link that drops, duplicates and reorders."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from mcastkit.diag.ping import PingSession, decode_untrusted, verdict

MS = 1_000_000


def _pair(**options: object) -> tuple[PingSession, PingSession]:
    a = PingSession(1, now_ns=0, interval_ns=100 * MS, ttl=64, **options)  # type: ignore[arg-type]
    b = PingSession(2, now_ns=0, interval_ns=100 * MS, ttl=64, **options)  # type: ignore[arg-type]
    return a, b


ADDR = {1: ("10.0.0.1", 5080), 2: ("10.0.0.2", 5080)}


def _run(
    a: PingSession,
    b: PingSession,
    rounds: int,
    *,
    drop=lambda n, s: False,
    dup=lambda n, s: False,
    delay_ns: int = 2 * MS,
    ttl_seen: int = 62,
) -> None:
    """Deliver everything a and b send, with a fixed one-way delay, for ``rounds`` intervals."""
    sessions = {1: a, 2: b}
    in_flight: list[tuple[int, int, bytes, tuple[str, int]]] = []  # (arrival, to, data, src)
    sent = 0
    for step in range(rounds * 100):
        now = step * MS
        for me, session in sessions.items():
            for data, _dest in session.tick(now):
                sent += 1
                other = 3 - me
                if drop(sent, data):
                    continue
                copies = 2 if dup(sent, data) else 1
                in_flight.extend((now + delay_ns, other, data, ADDR[me]) for _ in range(copies))
        due = [item for item in in_flight if item[0] <= now]
        in_flight = [item for item in in_flight if item[0] > now]
        for _arrival, to, data, source in due:
            for answer, _dest in sessions[to].receive(data, source, ttl_seen, now):
                in_flight.append((now + delay_ns, 3 - to, answer, ADDR[to]))


def test_clean_link_rtt_ttl_and_no_loss() -> None:
    a, b = _pair()
    # b learns of a from its first multicast probe; a of b likewise.
    _run(a, b, 20)
    peer = a.summary(20 * 100 * MS)["peers"][0]
    for path in ("multicast", "unicast"):
        stats = peer[path]
        assert stats["loss_since_first"] == 0.0
        assert stats["duplicates"] == 0 and stats["reordered"] == 0
        assert stats["rtt_ms"]["min"] == stats["rtt_ms"]["max"] == 4.0  # 2 ms each way
        assert stats["ttl_seen"] == 62 and stats["hops"] == 2
        assert math.isclose(stats["jitter_ms"], 0.0, abs_tol=1e-9)
    assert peer["address"] == "10.0.0.2:5080"
    assert verdict(a.summary(0), None) == (0, [])


def test_loss_duplicates_are_counted() -> None:
    a, b = _pair()
    lost = set(range(20, 200, 7))
    _run(a, b, 40, drop=lambda n, s: n in lost, dup=lambda n, s: n % 11 == 0)
    stats = b.summary(40 * 100 * MS)["peers"][0]
    total_dups = stats["multicast"]["duplicates"] + stats["unicast"]["duplicates"]
    assert total_dups > 0
    received = stats["multicast"]["received"] + stats["unicast"]["received"]
    assert 0 < received < 80


def test_reordering_and_jitter() -> None:
    a, b = _pair()
    # Deliver a's multicast probes 3 and 4 swapped, and vary delay to make jitter.
    probes = []
    for n in range(1, 7):
        probes += [d for d, dest in a.tick(n * 100 * MS) if dest is None]
    order = [0, 1, 3, 2, 4, 5]
    for rank, index in enumerate(order):
        b.receive(probes[index], ADDR[1], 64, (rank + 1) * 100 * MS + (5 * MS if rank % 2 else 0))
    stats = b.summary(10**10)["peers"][0]["multicast"]
    assert stats["received"] == 6 and stats["reordered"] == 1
    assert stats["jitter_ms"] > 0
    assert stats["longest_gap_ms"] >= 100


def test_multicast_dead_unicast_alive_fails_the_verdict() -> None:
    a, b = _pair(pinned=[ADDR[2]])
    # Drop every multicast datagram: only pinned unicast gets through, yet peers are found.
    _run(
        a,
        b,
        20,
        drop=lambda n, s: decode_untrusted(s) is not None and decode_untrusted(s).path == 1,
    )  # type: ignore[union-attr]
    summary = a.summary(20 * 100 * MS)
    assert summary["peers"] and summary["peers"][0]["unicast"]["answered"] > 0
    code, reasons = verdict(summary, None)
    assert code == 1 and "no multicast arrives" in reasons[0]
    host = summary["peers"][0]["address"].rsplit(":", 1)[0]
    assert f"--peer {host}" in reasons[0] and "mcast relay" in reasons[0]  # the way out


def test_max_loss_verdict_and_no_peers() -> None:
    a, b = _pair()
    _run(a, b, 40, drop=lambda n, s: n % 5 == 0)
    code, reasons = verdict(a.summary(40 * 100 * MS), 0.05)
    assert code == 1 and "exceeds --max-loss" in reasons[0]
    assert verdict({"peers": []}, None)[0] == 1


@given(st.binary(max_size=200))
def test_hostile_datagrams_never_raise(data: bytes) -> None:
    a, _ = _pair()
    for payload in (data, b"MKP1" + data):
        assert isinstance(a.receive(payload, ("10.9.9.9", 1), 3, 0), list)
    assert a.peers == {} or all(p.node_id != 0 for p in a.peers.values())


def test_a_peer_gone_silent_stays_with_its_figures_and_is_shown_silent() -> None:
    from rich.console import Console

    from mcastkit.cli.diag import ping_table

    a, b = _pair()
    _run(a, b, 10)  # ~1 s together, at 100 ms a probe
    heard = a.summary(10 * 100 * MS)["peers"][0]
    assert heard["silent_s"] < 0.2
    for step in range(10 * 100, 20 * 100):  # then b is gone: a keeps probing, hears nothing
        a.tick(step * MS)
    gone = a.summary(20 * 100 * MS)
    (peer,) = gone["peers"]
    assert 0.9 < peer["silent_s"] < 1.1 and gone["interval_s"] == 0.1
    assert peer["unicast"]["answered"] == heard["unicast"]["answered"]  # history kept
    console = Console(width=240, record=True)
    console.print(ping_table(gone))
    assert "silent 1 s" in console.export_text()
    console = Console(width=240, record=True)
    console.print(ping_table(a.summary(10 * 100 * MS + 1)))
    assert "silent" not in console.export_text()


def test_multicast_probes_that_go_unanswered_fail_the_verdict() -> None:
    """Issue 25, item 9: our multicast probes never reach the peer (its own reach us, and
    unicast works both ways): that is multicast failing too, not exit 0."""
    a, b = _pair()

    def ours_lost(_n: int, data: bytes) -> bool:
        probe = decode_untrusted(data)
        return probe is not None and probe.path == 1 and probe.kind == 1 and probe.sender == 1

    _run(a, b, 20, drop=ours_lost)
    summary = a.summary(20 * 100 * MS, final=True)
    (peer,) = summary["peers"]
    assert peer["multicast"]["received"] > 0 and peer["multicast"]["answered"] == 0
    code, reasons = verdict(summary, None)
    assert code == 1 and "multicast probes go unanswered" in reasons[0], reasons


def _forged_answers(victim: PingSession, probes: list[bytes], count: int) -> int:
    """Answers to ``victim``'s multicast probe from ``count`` made-up peers, each at its own
    (spoofed) address, as any host that hears the group can forge them."""
    from mcastkit.diag.ping import ANSWER, ANSWER_TAIL, HEAD, MAGIC, MULTICAST

    probe = next(p for p in map(decode_untrusted, probes) if p is not None and p.path == 1)
    for n in range(count):
        answer = HEAD.pack(MAGIC, ANSWER, MULTICAST, 64, 0xF00 + n, 1, 0) + ANSWER_TAIL.pack(
            victim.node_id, probe.seq, probe.sent_ns, 64
        )
        victim.receive(answer, (f"10.9.{n // 250}.{n % 250}", 5080), 64, probe.sent_ns + MS)
    return count


def test_forged_answers_cannot_keep_a_ping_probing_victims_or_fill_its_table() -> None:
    # Before (issue 22, class 6): 256 forged answers made 256 spoofed peers confirmed for
    # good: 2,560 unicast probes/s to victim addresses after the attacker stopped, and a
    # real ping arriving later was refused (table full).
    ping = PingSession(1, now_ns=0, interval_ns=100 * MS, ttl=64)
    _forged_answers(ping, [data for data, _ in ping.tick(0)], 256)  # they exist ...
    _forged_answers(ping, [data for data, _ in ping.tick(100 * MS)], 256)  # ... and "answer"
    assert len(ping.peers) == 256 and all(p.confirmed for p in ping.peers.values())
    to_victims = 0
    for step in range(2, 400):  # 40 s without a word from the forged peers
        sent = ping.tick(step * 100 * MS)
        if step * 100 * MS > 31_000 * MS:
            to_victims += sum(1 for _, to in sent if to is not None and to[0].startswith("10.9."))
    assert to_victims == 0  # silent for 30 s: no more probes to the spoofed addresses
    real = PingSession(2, now_ns=0, interval_ns=100 * MS, ttl=64)
    newcomer = [data for data, _ in real.tick(40_000 * MS)]
    ping.receive(newcomer[0], ("10.0.0.2", 5080), 64, 40_000 * MS)
    assert any(key[0] == 2 for key in ping.peers)  # the table made room for a live one
    assert ping.counters["peers-evicted"] == 1


def test_the_core_contract_in_seconds_ends_with_its_count() -> None:
    # What the driver calls (core.Core): timer, datagrams out, datagrams in, next timer.
    a = PingSession(1, now_ns=0, interval_ns=100 * MS, ttl=64, count=2)
    b = PingSession(2, now_ns=0, interval_ns=100 * MS, ttl=64)
    assert a.next_timer() == 0.0 and a.next_event() is None
    a.handle_timer(0.0)
    ((probe, to_group),) = a.datagrams_to_send(0.0)
    assert to_group is None and a.datagrams_to_send(0.0) == []  # taken once
    b.receive_datagram(probe, ADDR[1], 0.002, 62)
    ((answer, _),) = b.datagrams_to_send(0.002)
    a.receive_datagram(answer, ADDR[2], 0.004, 62)
    for step in range(1, 40):  # 2 rounds of each path, then silence
        if (when := a.next_timer()) is not None and when <= step * 0.05:
            a.handle_timer(step * 0.05)
        a.datagrams_to_send(step * 0.05)
    assert a.probed_all and a.next_timer() is None
    assert (a.rounds, a.unicast_rounds) == (2, 2)
    # b was heard through its answer, and probed by unicast from then on.
    (peer,) = a.summary(4 * 100 * MS)["peers"]
    assert peer["id"] == f"{2:016x}" and peer["unicast"]["sent"] >= 1
