"""Sealed transfers: every datagram (announce, data, status, repair) in an AEAD envelope.

The protocol engines (sending.py, receiving.py) never see an envelope: the runtime seals what
they emit and opens what arrives before they see it. Envelopes are those of the group
frames (security.py), so a key file or passphrase that opens a group opens its transfers.

Without the key a host reads nothing and takes no part: its datagrams (a forged announce, a
block, a registration) fail to open and are dropped and counted by reason; the counts reach
the summaries, and a receiver that heard only sealed datagrams it cannot open is told why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..magics import DatagramKind, kind_of
from ..wire import ENVELOPE, TAG_SIZE
from .protocol import Buffer

if TYPE_CHECKING:  # the crypto library loads only for a transfer with a key
    from ..security import KeyRing

__all__ = ["OVERHEAD", "Guard"]

OVERHEAD = ENVELOPE.size + TAG_SIZE  # bytes an envelope adds to a datagram


class Guard:
    """Seals outgoing datagrams with ``ring`` and opens incoming ones; with no ring, lets
    plain datagrams through and counts the sealed ones it cannot open."""

    def __init__(self, ring: KeyRing | None) -> None:
        self.ring = ring
        self.dropped: dict[str, int] = {}
        # Who sent what we dropped (the first 64 hosts): who tried to take part without
        # the key, for the sender's report.
        self.dropped_from: dict[str, dict[str, int]] = {}
        self._plain = bytearray()  # opened datagrams of one receive batch, reused

    @property
    def overhead(self) -> int:
        """Bytes sealing adds to each datagram."""
        return OVERHEAD if self.ring is not None else 0

    def _drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1

    def seal(self, datagram: bytes) -> bytes:
        """One datagram as it goes on the wire."""
        return datagram if self.ring is None else self.ring.seal(datagram)

    def seal_parts(self, parts: list[tuple[bytes, Buffer]]) -> list[bytes]:
        """(header, payload) pairs, each sealed as one datagram. (Sealing into one reused
        buffer with ``encrypt_into`` measured slower here: the cipher's own allocation
        costs less than the views.)"""
        assert self.ring is not None
        seal = self.ring.seal
        return [seal(header + payload) for header, payload in parts]

    def open(self, data: Buffer, source: str | None = None) -> Buffer | None:
        """The datagram a peer (at ``source``) meant, or None (dropped and counted)."""
        sealed = kind_of(data) is DatagramKind.SEALED
        why: str | None = None
        if self.ring is None:
            if not sealed:
                return data
            why = "sealed-without-key"
        elif not sealed:
            why = "unsealed"
        else:
            opened = self.ring.open_untrusted(data)
            if not isinstance(opened, str):
                return opened
            why = opened
        self._drop(why)
        if source is not None and (source in self.dropped_from or len(self.dropped_from) < 64):
            counts = self.dropped_from.setdefault(source, {})
            counts[why] = counts.get(why, 0) + 1
        return None

    def open_runs(
        self, buffer: memoryview, spans: list[tuple[int, int]]
    ) -> tuple[memoryview, list[tuple[int, int]]]:
        """The datagrams at ``spans`` of ``buffer``, opened into one reused buffer, with their
        spans there; the ones that do not open are dropped and counted."""
        if self.ring is None:
            # Cheap first: an envelope's third byte is the frame version (1), where a plain
            # transfer datagram has the "T" of "MKT1"; only then ask the registry.
            if any(end - start > 3 and buffer[start + 2] == 1 for start, end in spans) and any(
                kind_of(buffer[start:end]) is DatagramKind.SEALED for start, end in spans
            ):
                kept = []
                for start, end in spans:
                    if kind_of(buffer[start:end]) is DatagramKind.SEALED:
                        self._drop("sealed-without-key")
                    else:
                        kept.append((start, end))
                return buffer, kept
            return buffer, spans
        need = sum(end - start for start, end in spans)
        if len(self._plain) < need:
            self._plain = bytearray(need)
        plain = memoryview(self._plain)
        opened, dropped = self.ring.open_spans_into(buffer, spans, plain)
        for why in dropped:
            self._drop(why)
        return plain, opened
