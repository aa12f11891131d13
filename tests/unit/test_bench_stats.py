"""Bench receiver statistics and rate parsing, on crafted datagrams."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastkit.diag.bench import BenchStats, make_payload, parse_rate

MS = 1_000_000


def _feed(stats: BenchStats, seqs: list[int], step_ns: int = MS) -> None:
    for n, seq in enumerate(seqs):
        stats.on_datagram(make_payload(seq, n * step_ns, 100), (n + 1) * step_ns, 0)


def test_clean_stream() -> None:
    stats = BenchStats()
    _feed(stats, list(range(1000)))
    summary = stats.summary()
    assert summary["packets"] == 1000 and summary["lost"] == 0 and summary["loss"] == 0.0
    assert summary["jitter_ms"] == 0.0 and summary["sender"] == "mcastkit"
    assert summary["pps"] == pytest.approx(1000, rel=0.01)


def test_loss_duplicates_and_reordering() -> None:
    stats = BenchStats()
    _feed(stats, [0, 1, 2, 4, 3, 5, 5, 8, 9])  # 6 and 7 lost; 3 late; 5 twice
    summary = stats.summary()
    assert summary["lost"] == 2
    assert summary["duplicates"] == 1
    assert summary["reordered"] == 1
    assert summary["loss"] == pytest.approx(2 / 10)


def test_per_second_intervals() -> None:
    stats = BenchStats()
    _feed(stats, list(range(2500)))  # 2.5 s at 1 kpps
    intervals = stats.intervals
    assert [i["t"] for i in intervals] == [1.0, 2.0]
    assert all(i["pps"] == pytest.approx(1000, abs=1) for i in intervals)


def test_iperf2_header_is_understood_and_fin_ignored() -> None:
    stats = BenchStats()
    for seq in (0, 1, 3):
        stats.on_datagram(struct.pack("!iII", seq, 100, 0) + bytes(100), seq * MS, 0)
    stats.on_datagram(struct.pack("!iII", -4, 100, 0) + bytes(100), 5 * MS, 0)
    summary = stats.summary()
    assert summary["sender"] == "iperf2"
    assert summary["packets"] == 3 and summary["lost"] == 1


def test_kernel_drop_counter_is_relative_to_the_first() -> None:
    stats = BenchStats()
    stats.on_datagram(make_payload(0, 0, 50), 1, 0, drops=10)
    stats.on_datagram(make_payload(1, 0, 50), 2, 0, drops=17)
    assert stats.summary()["kernel_drops"] == 7


@pytest.mark.parametrize(
    ("text", "pps_at_1000"),
    [("8M", 1000), ("8Mbps", 1000), ("1.6m", 200), ("50kpps", 50000), ("1g", 125000)],
)
def test_parse_rate(text: str, pps_at_1000: float) -> None:
    rate = parse_rate(text)
    assert rate is not None
    assert rate.packets_per_second(1000) == pytest.approx(pps_at_1000)


@pytest.mark.parametrize("text", ["fast", "-1M", "0", "10Q", ""])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def test_max_rate() -> None:
    assert parse_rate("max") is None


@given(st.binary(max_size=300))
def test_any_datagram_is_counted_without_raising(data: bytes) -> None:
    stats = BenchStats()
    stats.on_datagram(data, 1, 1)
    stats.on_datagram(data, 2, 2)
    assert stats.summary()["packets"] in (0, 2)
