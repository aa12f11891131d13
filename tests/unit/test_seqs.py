"""The one sequence tracker of ping and bench, against a plain model of what arrived."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcastkit.diag.seqs import DUPLICATE, LATE, SeqTracker


@given(st.lists(st.integers(0, 200), max_size=300))
def test_every_arrival_is_counted_once_as_what_it_is(seqs: list[int]) -> None:
    tracker = SeqTracker(window=1000)  # remembers them all: every repeat is a duplicate
    skipped = late = filled = 0
    for seq in seqs:
        arrival = tracker.take(seq, 0)
        if arrival == LATE:
            late += 1
            filled += seq > seqs[0]  # a gap's seq after all (below the first: no gap)
        elif arrival != DUPLICATE:
            skipped += arrival
    distinct = set(seqs)
    assert tracker.received == len(distinct)
    assert tracker.duplicates == len(seqs) - len(distinct)
    assert tracker.reordered == late
    if seqs:
        assert (tracker.first, tracker.highest) == (seqs[0], max(seqs))
        # What was skipped, less what came late into the gaps, is the span never seen.
        span = tracker.highest - tracker.first + 1
        assert skipped - filled == span - len({s for s in distinct if s >= seqs[0]})


def test_a_duplicate_past_the_window_counts_as_late_not_new() -> None:
    tracker = SeqTracker(window=2)
    for seq in (1, 2, 3):
        tracker.take(seq, 0)
    assert tracker.take(1, 0) == LATE  # forgotten: taken again, below the highest
    assert tracker.take(3, 0) == DUPLICATE


def test_jitter_follows_rfc_3550() -> None:
    tracker = SeqTracker(window=8)
    tracker.take(1, 1_000)
    tracker.take(2, 1_160)  # transit changed by 160 ns: J = 160 / 16
    assert tracker.jitter_ns == 10.0
    tracker.take(2, 9_999)  # a duplicate does not move it
    assert tracker.jitter_ns == 10.0
