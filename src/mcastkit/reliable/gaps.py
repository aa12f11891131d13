"""Missing seqs of a reliable stream as ranges, each with its own NACK schedule (no I/O)."""

from __future__ import annotations

import bisect
import heapq

__all__ = ["Gap", "Gaps"]


class Gap:
    """Missing seqs first..end-1, seen at ``seen``; next NACK at ``due``."""

    __slots__ = ("due", "end", "first", "quiet_until", "seen")

    def __init__(self, first: int, end: int, seen: float, due: float) -> None:
        self.first, self.end, self.seen, self.due = first, end, seen, due
        self.quiet_until = 0.0


class Gaps:
    """Missing seqs as sorted ranges: a jump of a million seqs costs one entry, not a million.

    Each range carries its own NACK schedule (a heap with lazy deletion); an arrival inside a
    range splits it.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []  # sorted firsts
        self.by_first: dict[int, Gap] = {}
        self.heap: list[tuple[float, int]] = []
        self.count = 0  # seqs missing

    def __len__(self) -> int:
        return len(self.starts)

    def clear(self) -> None:
        self.starts.clear()
        self.by_first.clear()
        self.heap.clear()
        self.count = 0

    def add(self, first: int, end: int, seen: float, due: float) -> None:
        gap = Gap(first, end, seen, due)
        bisect.insort(self.starts, first)
        self.by_first[first] = gap
        self.count += end - first
        self._schedule(gap)

    def append_range(self, first: int, end: int, seen: float, due: float) -> None:
        """Mark first..end-1, above every range, missing (extending the last when adjacent)."""
        if self.starts:
            last = self.by_first[self.starts[-1]]
            if last.end == first:
                last.end = end
                self.count += end - first
                return
        self.add(first, end, seen, due)

    def find(self, seq: int) -> Gap | None:
        index = bisect.bisect_right(self.starts, seq) - 1
        if index < 0:
            return None
        gap = self.by_first[self.starts[index]]
        return gap if seq < gap.end else None

    def __contains__(self, seq: int) -> bool:
        return self.find(seq) is not None

    def lowest(self) -> int | None:
        return self.starts[0] if self.starts else None

    def highest(self) -> int | None:
        return self.by_first[self.starts[-1]].end - 1 if self.starts else None

    def remove_seq(self, seq: int) -> bool:
        """``seq`` arrived: True when it was missing."""
        gap = self.find(seq)
        if gap is None:
            return False
        self.count -= 1
        if gap.end - gap.first == 1:
            self._drop(gap)
        elif seq == gap.first:
            self._rekey(gap, seq + 1)
        elif seq == gap.end - 1:
            gap.end = seq
        else:
            right = Gap(seq + 1, gap.end, gap.seen, gap.due)
            right.quiet_until = gap.quiet_until
            gap.end = seq
            bisect.insort(self.starts, right.first)
            self.by_first[right.first] = right
            self._schedule(right)
        return True

    def cut_below(self, limit: int) -> list[tuple[int, int]]:
        """Remove every missing seq below ``limit``; returns the (first, end) ranges removed."""
        removed: list[tuple[int, int]] = []
        while self.starts and self.starts[0] < limit:
            gap = self.by_first[self.starts[0]]
            stop = min(gap.end, limit)
            removed.append((gap.first, stop))
            self.count -= stop - gap.first
            if stop == gap.end:
                self._drop(gap)
            else:
                self._rekey(gap, stop)
        return removed

    def take(self, gap: Gap) -> None:
        """Remove a whole range (given up)."""
        self.count -= gap.end - gap.first
        self._drop(gap)

    def suppress(self, runs: list[tuple[int, int]], until: float, budget: int = 256) -> None:
        """Ranges wholly inside a run someone else asked for: hold our NACK for them back."""
        for first, count in runs:
            end = first + count
            index = bisect.bisect_left(self.starts, first)
            while index < len(self.starts) and budget > 0:
                gap = self.by_first[self.starts[index]]
                if gap.first >= end:
                    break
                budget -= 1  # bounded work per NACK, whatever its runs span
                if gap.end <= end:
                    gap.quiet_until = until
                index += 1

    def due(self, now: float) -> list[Gap]:
        """Ranges whose NACK time has come (each once; the caller reschedules)."""
        out: list[Gap] = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            when, first = heapq.heappop(heap)
            gap = self.by_first.get(first)
            if gap is not None and gap.due == when and gap not in out:
                out.append(gap)
        return out

    def reschedule(self, gap: Gap, due: float) -> None:
        gap.due = due
        self._schedule(gap)

    def next_due(self) -> float | None:
        heap = self.heap
        while heap:
            when, first = heap[0]
            gap = self.by_first.get(first)
            if gap is not None and gap.due == when:
                return when
            heapq.heappop(heap)  # stale: the range moved, split or went
        return None

    def _schedule(self, gap: Gap) -> None:
        heapq.heappush(self.heap, (gap.due, gap.first))
        if len(self.heap) > 4 * len(self.starts) + 64:
            self.heap = [(g.due, g.first) for g in self.by_first.values()]
            heapq.heapify(self.heap)

    def _drop(self, gap: Gap) -> None:
        index = bisect.bisect_left(self.starts, gap.first)
        del self.starts[index]
        del self.by_first[gap.first]

    def _rekey(self, gap: Gap, first: int) -> None:
        """Move a range's start up (its place in the sorted list stays the same)."""
        index = bisect.bisect_left(self.starts, gap.first)
        del self.by_first[gap.first]
        self.starts[index] = gap.first = first
        self.by_first[first] = gap
        self._schedule(gap)
