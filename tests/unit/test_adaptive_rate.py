"""The adaptive rate: backs off on receiver overflow, never on random loss."""

from __future__ import annotations

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
