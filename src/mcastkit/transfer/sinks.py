"""The storage seam of a file receiver: the engine (receiving.py) writes through a ``Sink``
that a ``Storage`` opens, and never touches a file itself (storage.py has files on disk and
in memory)."""

from __future__ import annotations

from typing import Protocol

from .protocol import FileInfo

__all__ = ["Sink", "Storage"]


class Sink(Protocol):
    """Where a receiver's blocks go (transfer/storage.py: files; or memory)."""

    def write_run(self, file_index: int, offset: int, blocks: list[memoryview]) -> None:
        """Consecutive blocks from ``offset`` in one call."""
        ...

    mismatched: list[int]  # after a failed finish: the files whose sha256 did not match

    def finish(self) -> str | None:
        """Verify every file and make it final; the reason when one fails."""
        ...

    def rewind(self, indices: list[int]) -> None:
        """These files are received again from their first block."""
        ...

    def discard(self) -> None:
        """Forget everything written (nothing wrong is left behind)."""
        ...

    def resumable(self) -> dict[int, tuple[str, int, bytearray | None]]:
        """Partials of earlier transfers this sink took over: file index -> (the sha256
        they were of, their block size, a byte per block: 1 = on disk). With ``sync``, a
        file already in place: (its sha256, 0, None)."""
        ...

    def up_to_date(self, file_index: int) -> None:
        """The file in place is the one announced: keep it, write nothing for it."""
        ...

    def checkpoint(self, bitmaps: list[bytearray], block_size: int) -> None:
        """Record the blocks on disk, for a later transfer to resume from."""
        ...

    def keep(self) -> None:
        """Stop, keeping what a later transfer can resume from."""
        ...


class Storage(Protocol):
    """Opens a sink for an announced file list; raises OSError or ValueError to refuse it
    (no space, a name it will not write, a file it will not replace)."""

    def open(self, files: list[FileInfo], *, sync: bool = False) -> Sink:
        """``sync``: files already in place with the same content may be kept as they are
        (offered through ``Sink.resumable``); others of the same name are replaced only
        where the receiver allowed it (its overwrite), never because a sender asked."""
        ...
