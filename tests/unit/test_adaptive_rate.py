"""The adaptive rate: backs off on receiver overflow, never on random loss."""

from __future__ import annotations

import pytest

from mcastkit.transfer.rate import AdaptiveRate, Load

STEP = 0.05  # seconds between samples, as the sender takes them


class Samples:
    """Feeds a controller samples 50 ms apart, as the sender does; receivers report loads."""

    def __init__(self, rate: AdaptiveRate) -> None:
        self.rate = rate
        self.now = 100.0
        rate.on_sample(self.now, 0, {})  # the baseline: nothing to judge yet

    def __call__(
        self,
        sent: int | None = None,
        drops: dict[int, int] | None = None,
        fill: int | None = None,
        held: dict[int, int] | None = None,
    ) -> float:
        self.now += STEP
        if sent is None:  # what the rate allows: a paced sender keeps to it
            sent = round(self.rate.pps * STEP)
        drops = drops or {1: 0}
        loads = {
            receiver: Load(
                total,
                fill,
                (held or {}).get(receiver, 0),
                None if held is None else self.now - 0.001,
            )
            for receiver, total in drops.items()
        }
        return self.rate.on_sample(self.now, sent, loads)


def test_grows_while_no_receiver_drops() -> None:
    rate = AdaptiveRate(1000.0, ceiling=2000.0)
    sample = Samples(rate)
    for _ in range(20):
        sample(100, {1: 0, 2: 0})  # 2,000/s really sent: the rate may run ahead of it
    assert rate.pps == 2000.0
    assert rate.history == sorted(rate.history)


def test_backs_off_when_a_receiver_overflows_and_holds_at_the_floor() -> None:
    rate = AdaptiveRate(1000.0, floor=400.0)
    sample = Samples(rate)
    sample(None, {1: 0, 2: 0})
    for total in range(100, 2000, 100):
        sample(None, {1: 0, 2: total})  # receiver 2 drops 100 per sample
    assert rate.pps == 400.0
    assert {cut["why"] for cut in rate.cuts} == {"overflow"}


def test_a_trickle_of_drops_neither_grows_nor_shrinks() -> None:
    rate = AdaptiveRate(200_000.0)
    sample = Samples(rate)
    sample(10_000, {1: 0})
    sample(10_000, {1: 2})  # 2 of 10,000: below the 0.5 % threshold
    assert rate.pps == 200_000.0 * 1.1  # the first (clean) sample grew, the trickle held
    assert not rate.cuts


def test_random_network_loss_is_invisible_to_it() -> None:
    # Random loss on the path shows up as NAKs, never as kernel drops: nothing to react to.
    rate = AdaptiveRate(1000.0, ceiling=1e9)
    sample = Samples(rate)
    for _ in range(5):
        sample(50)
    assert rate.pps > 1000.0


def test_a_filling_buffer_eases_off_before_anything_is_dropped() -> None:
    rate = AdaptiveRate(20_000.0)
    sample = Samples(rate)
    sample(1000, fill=10)  # clean and nearly empty: grows
    grown = rate.pps
    sample(1000, fill=60)  # half full and rising: eases off, no drop
    assert rate.pps == pytest.approx(min(grown, 20_000) * 0.9)
    assert rate.cuts[-1]["why"] == "filling" and rate.cuts[-1]["dropped"] == 0


def test_a_congested_receiver_sets_the_rate_to_just_under_its_pace_once() -> None:
    """A receiver that takes 125k blocks/s while 190k/s arrive: one cut to just under its
    pace, not a ratio per sample while its buffer drains (that went 191k -> 97k)."""
    rate = AdaptiveRate(190_000.0)
    sample = Samples(rate)
    held = 0
    sample(9_500, fill=30, held={1: held})
    for fill in (60, 80):
        held += 6_250  # 125k/s
        sample(9_500, fill=fill, held={1: held})
    assert rate.pps == pytest.approx(125_000 * 0.95, rel=0.01)
    assert rate.cuts[0]["receiver_pps"] == pytest.approx(125_000, rel=0.01)
    for fill in (80, 70, 55, 40, 30):  # settling, then draining: holds
        held += 6_250
        sample(5_900, fill=fill, held={1: held})
    assert rate.pps == pytest.approx(125_000 * 0.95, rel=0.01)
    assert len(rate.cuts) == 1


def test_a_receiver_stalled_for_a_moment_keeps_its_capacity() -> None:
    """Descheduled for 100 ms, a receiver takes nothing and overflows; its capacity is what
    it took just before. The rate stays near that, not at half, nor at its floor."""
    rate = AdaptiveRate(250_000.0)
    sample = Samples(rate)
    held = 0
    for _ in range(4):
        held += 12_000  # 240k/s: it keeps up
        sample(12_500, fill=5, held={1: held})
    for drops in (0, 3_000):  # stalled: nothing taken, the buffer fills, then overflows
        sample(12_500, drops={1: drops}, fill=100, held={1: held})
    assert rate.pps >= 240_000 * 0.95 * 0.99
    held += 14_000  # back: the backlog drains at its full pace
    sample(12_000, drops={1: 3_000}, fill=40, held={1: held})
    assert rate.pps >= 240_000 * 0.95 * 0.99


def test_a_receiver_slower_for_good_is_followed_once_its_window_passes() -> None:
    rate = AdaptiveRate(250_000.0)
    sample = Samples(rate)
    held = 0
    for _ in range(3):
        held += 12_000
        sample(12_500, fill=5, held={1: held})
    drops = 0
    for _ in range(14):  # half its CPU gone: 100k/s taken, the rest overflows
        held += 5_000
        drops += 7_000
        sample(None, drops={1: drops}, fill=100, held={1: held})
    assert rate.pps == pytest.approx(100_000 * 0.95, rel=0.01)


def test_a_cut_never_goes_below_half_of_what_was_sent() -> None:
    rate = AdaptiveRate(100_000.0)
    sample = Samples(rate)
    sample(5_000, held={1: 0})
    sample(5_000, drops={1: 4_000}, fill=100, held={1: 5})  # stalled: 100 blocks/s taken
    assert rate.pps == pytest.approx(50_000)


def test_a_sender_held_back_by_its_cpu_is_cut_from_what_it_really_sent() -> None:
    rate = AdaptiveRate(1e6)  # nominal: far beyond what this sender manages (200k/s)
    sample = Samples(rate)
    sample(10_000, fill=10)
    sample(10_000, fill=70)  # filling, the receiver's capacity unknown
    assert rate.pps == pytest.approx(200_000 * 0.9)


def test_a_decrease_is_judged_one_sample_later() -> None:
    # The samples lag one round trip and a full buffer drains at the receiver's pace: after a
    # decrease, the next sample still looks bad and must not cut the rate again.
    rate = AdaptiveRate(20_000.0)
    sample = Samples(rate)
    sample(1000)
    sample(1000, {1: 500}, fill=90)  # overflow: back off
    after = rate.pps
    sample(1000, {1: 900}, fill=95)  # the same episode, seen late: hold
    assert rate.pps == after
    sample(1000, {1: 900}, fill=70)  # draining (falling fill): hold
    assert rate.pps == after
    sample(1000, {1: 900}, fill=5)  # drained: grow again
    assert rate.pps > after


def test_a_full_but_draining_buffer_is_not_a_reason_to_slow_down() -> None:
    rate = AdaptiveRate(20_000.0)
    sample = Samples(rate)
    sample(1000, fill=80)  # filling: eases off once
    sample(1000, fill=85)  # settling: judged next time
    sample(1000, fill=60)  # over HIGH_FILL but falling: holds
    sample(1000, fill=30)  # between the marks: holds
    assert rate.pps == 18_000.0


def test_idle_receivers_let_it_ramp_up_fast_and_silent_ones_do_not() -> None:
    reported = AdaptiveRate(1000.0, ceiling=1e9)
    silent = AdaptiveRate(1000.0, ceiling=1e9)
    said, older = Samples(reported), Samples(silent)
    for step in range(4):
        said(int(50 * 1.5**step), fill=0)  # said: its buffer is empty
        older(int(50 * 1.1**step))  # an older receiver: no fill reported
    assert reported.pps == pytest.approx(1000.0 * 1.5**4, rel=0.01)
    assert silent.pps == pytest.approx(1000.0 * 1.1**4, rel=0.01)


def test_pauses_are_no_evidence() -> None:
    rate = AdaptiveRate(50_000.0)
    sample = Samples(rate)
    sample(2_500)
    before = rate.pps
    for _ in range(5):
        sample(0, fill=0)  # between passes, nothing to send: neither grow nor cut
    assert rate.pps == before


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
