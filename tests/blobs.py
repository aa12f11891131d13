"""A block source over bytes in memory (``transfer.sending.BlockSource``), for the transfer
engines' tests: file ``i`` is ``blobs[i]``."""

from __future__ import annotations


class Blobs:
    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def read(self, file_index: int, offset: int, size: int) -> bytes:
        return self.blobs[file_index][offset : offset + size]
