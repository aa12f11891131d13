"""A set of seqs kept as sorted, disjoint runs (no I/O)."""

from __future__ import annotations

import bisect


class SeqRuns:
    """Seqs as disjoint [first, end) runs: a whole window costs one run, a seq is held once
    however often it is added, and the lowest comes out first. At most ``max_runs`` runs:
    an addition that would need more is refused (``add`` returns False)."""

    def __init__(self, max_runs: int) -> None:
        self.max_runs = max_runs
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        """Runs held (not seqs)."""
        return len(self._starts)

    def __contains__(self, seq: int) -> bool:
        index = bisect.bisect_right(self._starts, seq) - 1
        return index >= 0 and seq < self._ends[index]

    def add(self, first: int, end: int) -> bool:
        """Add [first, end); runs it touches are joined. False: refused (full)."""
        if first >= end:
            return True
        starts, ends = self._starts, self._ends
        low = bisect.bisect_left(ends, first)  # the first run ending at or after first
        high = bisect.bisect_right(starts, end)  # runs starting at or before end
        if low < high:
            first, end = min(first, starts[low]), max(end, ends[high - 1])
            starts[low:high], ends[low:high] = [first], [end]
            return True
        if len(starts) >= self.max_runs:
            return False
        starts.insert(low, first)
        ends.insert(low, end)
        return True

    def discard(self, seq: int) -> None:
        """Remove ``seq`` if held (a run around it splits in two)."""
        index = bisect.bisect_right(self._starts, seq) - 1
        if index < 0 or seq >= self._ends[index]:
            return
        start, end = self._starts[index], self._ends[index]
        if start == seq and end == seq + 1:
            del self._starts[index], self._ends[index]
        elif start == seq:
            self._starts[index] = seq + 1
        elif end == seq + 1:
            self._ends[index] = seq
        else:  # a split may pass max_runs by one: a bound, not an exact count
            self._ends[index] = seq
            self._starts.insert(index + 1, seq + 1)
            self._ends.insert(index + 1, end)

    def pop_lowest(self, floor: int) -> int | None:
        """Take the lowest seq at or above ``floor``; those below it are dropped (gone)."""
        starts, ends = self._starts, self._ends
        while starts and ends[0] <= floor:
            del starts[0], ends[0]
        if not starts:
            return None
        seq = max(starts[0], floor)
        if seq + 1 == ends[0]:
            del starts[0], ends[0]
        else:
            starts[0] = seq + 1
        return seq
