"""The adaptive rate: backs off on receiver overflow, never on random loss."""

from __future__ import annotations

import pytest

from mcastkit.transfer.rate import AdaptiveRate


def test_grows_while_no_receiver_drops() -> None:
    rate = AdaptiveRate(1000.0, ceiling=2000.0)
    for _ in range(20):
        rate.on_sample({1: 0, 2: 0}, sent=250)
    assert rate.pps == 2000.0
    assert rate.history == sorted(rate.history)


def test_backs_off_when_a_receiver_overflows_and_holds_at_the_floor() -> None:
    rate = AdaptiveRate(1000.0, floor=400.0)
    rate.on_sample({1: 0, 2: 0}, sent=250)  # baseline
    for total in range(100, 2000, 100):
        rate.on_sample({1: 0, 2: total}, sent=250)  # receiver 2 drops 100 per sample
    assert rate.pps == 400.0


def test_a_trickle_of_drops_neither_grows_nor_shrinks() -> None:
    rate = AdaptiveRate(1000.0)
    rate.on_sample({1: 0}, sent=10_000)
    rate.on_sample({1: 2}, sent=10_000)  # 2 of 10,000: below the 0.5 % threshold
    assert rate.pps == 1000.0 * 1.1  # first (clean) sample grew, the trickle held


def test_random_network_loss_is_invisible_to_it() -> None:
    # Random loss on the path shows up as NAKs, never as kernel drops: nothing to react to.
    rate = AdaptiveRate(1000.0, ceiling=1e9)
    for _ in range(5):
        rate.on_sample({1: 0}, sent=1000)
    assert rate.pps > 1000.0


def test_a_filling_buffer_eases_off_before_anything_is_dropped() -> None:
    rate = AdaptiveRate(1000.0)
    rate.on_sample({1: 0}, sent=1000, fill=10)  # clean and nearly empty: grows
    grown = rate.pps
    rate.on_sample({1: 0}, sent=1000, fill=60)  # half full and rising: eases off, no drop
    assert rate.pps == grown * 0.9


def test_a_decrease_is_judged_one_sample_later() -> None:
    # The samples lag one round trip and a full buffer drains at the receiver's pace: after a
    # decrease, the next sample still looks bad and must not cut the rate again.
    rate = AdaptiveRate(1000.0)
    rate.on_sample({1: 0}, sent=1000)
    rate.on_sample({1: 500}, sent=1000, fill=90)  # overflow: back off
    after = rate.pps
    rate.on_sample({1: 900}, sent=1000, fill=95)  # the same episode, seen late: hold
    assert rate.pps == after
    rate.on_sample({1: 900}, sent=1000, fill=70)  # draining (falling fill): hold
    assert rate.pps == after
    rate.on_sample({1: 900}, sent=1000, fill=5)  # drained: grow again
    assert rate.pps > after


def test_a_full_but_draining_buffer_is_not_a_reason_to_slow_down() -> None:
    rate = AdaptiveRate(1000.0)
    rate.on_sample({1: 0}, sent=1000, fill=80)  # filling: eases off once
    rate.on_sample({1: 0}, sent=1000, fill=85)  # settling: judged next time
    rate.on_sample({1: 0}, sent=1000, fill=60)  # over HIGH_FILL but falling: holds
    rate.on_sample({1: 0}, sent=1000, fill=30)  # between the marks: holds
    assert rate.pps == 900.0


def test_idle_receivers_let_it_ramp_up_fast_and_silent_ones_do_not() -> None:
    reported = AdaptiveRate(1000.0, ceiling=1e9)
    silent = AdaptiveRate(1000.0, ceiling=1e9)
    for _ in range(4):
        reported.on_sample({1: 0}, sent=1000, fill=0)  # said: its buffer is empty
        silent.on_sample({1: 0}, sent=1000)  # an older receiver: no fill reported
    assert reported.pps == pytest.approx(1000.0 * 1.25**4)
    assert silent.pps == pytest.approx(1000.0 * 1.1**4)


def test_paced_batches_hold_at_most_a_millisecond_of_the_rate() -> None:
    """At a slow rate a batch is small: 16 datagrams at once overflowed a small receive
    buffer at any rate, so the rate sank to its floor and stayed (120 MB took 290 s)."""
    from mcastkit.transfer.runtime import BURST, MIN_BURST, batch_bounds

    assert batch_bounds(500) == (1.0, 5.0)
    assert batch_bounds(2_000) == (2.0, 20.0)
    assert batch_bounds(100_000) == (MIN_BURST, BURST)  # fast: full GSO batches, as before
    for pps in (1, 50, 500, 5_000, 50_000, 5e6):
        least, most = batch_bounds(pps)
        assert 1 <= least <= most <= BURST and least <= max(1, pps / 1000)
