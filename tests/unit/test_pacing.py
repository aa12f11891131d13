"""The one token bucket (pacing.py): what it lets through never exceeds rate x time + depth."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastkit.pacing import TokenBucket


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(1.0, 1e6),
    depth=st.floats(1.0, 1e4),
    steps=st.lists(
        st.tuples(st.floats(0.0, 0.05), st.floats(0.1, 2e4), st.booleans()), max_size=60
    ),
)
def test_spending_never_outruns_the_rate(
    rate: float, depth: float, steps: list[tuple[float, float, bool]]
) -> None:
    bucket = TokenBucket(rate, depth, 0.0)
    now = spent = 0.0
    largest = 0.0
    for advance, cost, whole in steps:
        now += advance
        bucket.refill(now)
        if whole:
            spent += bucket.take(1, int(cost) + 1)
        elif bucket.spend(cost):
            spent += cost
            largest = max(largest, cost)
        # One charge over the depth may overdraw (the bucket then owes it): never more.
        assert spent <= rate * now + depth + largest + 1e-6 * (rate * now + depth)


def test_a_rate_change_keeps_savings_capped_and_the_clock_never_runs_back() -> None:
    bucket = TokenBucket(1000.0, 100.0, 0.0, full=True)
    assert bucket.tokens == 100.0
    bucket.set_rate(10.0, 5.0)  # an adaptive controller backs off: no burst from savings
    assert bucket.tokens == 5.0
    bucket.refill(-10.0)  # a clock that went back adds nothing
    assert bucket.tokens == 5.0
    assert bucket.take(6, 10) == 0  # fewer than a batch's worth: nothing
    assert bucket.wait(6) == pytest.approx(0.0)  # asks for more than the depth: the depth
    assert bucket.take(5, 10) == 5
    assert bucket.wait(1) == pytest.approx(0.1)
    assert bucket.ready_at(1) == pytest.approx(0.1)


def test_no_rate_is_no_limit_and_nonsense_is_refused() -> None:
    bucket = TokenBucket(None, 1.0, 0.0)
    assert bucket.spend(1e9) and bucket.take(1, 256) == 256 and bucket.wait(1e9) == 0.0
    for rate, depth in ((0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (1.0, 0.0)):
        with pytest.raises(ValueError):
            TokenBucket(rate, depth, 0.0)
