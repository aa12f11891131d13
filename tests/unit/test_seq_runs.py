"""SeqRuns, the sender's set of deferred repairs, against a plain set (property-based)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcastkit.reliable.runs import SeqRuns

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 200), st.integers(0, 40)),
        st.tuples(st.just("discard"), st.integers(0, 240), st.just(0)),
        st.tuples(st.just("pop"), st.integers(0, 240), st.just(0)),
    ),
    max_size=80,
)


@given(operations)
def test_seq_runs_hold_what_a_set_would(ops: list[tuple[str, int, int]]) -> None:
    runs, model = SeqRuns(max_runs=10_000), set[int]()
    for name, a, b in ops:
        if name == "add":
            assert runs.add(a, a + b)
            model.update(range(a, a + b))
        elif name == "discard":
            runs.discard(a)
            model.discard(a)
        else:
            got = runs.pop_lowest(a)
            model = {s for s in model if s >= a}  # below the floor: gone
            assert got == (min(model) if model else None)
            model.discard(got)  # type: ignore[arg-type]
        assert all((s in runs) == (s in model) for s in range(0, 260))
        assert bool(runs) == bool(model)


def test_a_whole_window_asked_a_thousand_times_is_one_run() -> None:
    runs = SeqRuns(max_runs=4)
    for _ in range(1000):
        assert runs.add(1, 30_000)
    assert len(runs) == 1
    assert [runs.pop_lowest(0) for _ in range(3)] == [1, 2, 3]


def test_runs_past_the_bound_are_refused() -> None:
    runs = SeqRuns(max_runs=2)
    assert runs.add(0, 1) and runs.add(10, 11)
    assert not runs.add(20, 21)  # a third run: refused, the caller counts it
    assert runs.add(1, 10)  # joining what is held is always room
    assert len(runs) == 1 and 5 in runs and 20 not in runs
