"""Who may start a transfer: signed, fresh announces (sans-I/O; the clock is passed in).

A group key keeps outsiders out; a signature says which insider sent the files. The sender
signs every announce with an Ed25519 key (``mcast keygen --sign``): the file list with each
sha256, the session id and the time it was sent. A receiver given trusted public keys takes
only announces one of them signed, so the sha256 check at the end proves who sent each file.

Signed announce body: ``JSON | 0x00 | key fingerprint (8) | signature (64)``. JSON never holds
a raw NUL, so the split is unambiguous. The signature covers ``CONTEXT | header | JSON``:
the header carries the session id, so no announce can be moved to another session.

Sealed or signed transfers are also stamped: an announce whose time is further than
``max_skew`` from the receiver's clock is refused, so a recording of an old transfer cannot
be played back to a receiver as a new one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..security import SecurityError
from .protocol import ANNOUNCE, head

__all__ = [
    "AnnounceCheck",
    "AnnounceSigner",
    "fingerprint",
    "public_key_from_text",
    "public_text",
]

CONTEXT = b"mcastkit announce v1\x00"
SIGNATURE_SIZE = 64
FINGERPRINT_SIZE = 8
TRAILER_SIZE = 1 + FINGERPRINT_SIZE + SIGNATURE_SIZE
PUBLIC_PREFIX = "ed25519:"


def fingerprint(public: Ed25519PublicKey) -> bytes:
    """Eight bytes naming a public key (shown in hex)."""
    raw = public.public_bytes_raw()
    return hashlib.sha256(raw).digest()[:FINGERPRINT_SIZE]


def public_text(public: Ed25519PublicKey) -> str:
    """``ed25519:BASE64``: what ``--trust`` takes."""
    return PUBLIC_PREFIX + base64.b64encode(public.public_bytes_raw()).decode()


def public_key_from_text(value: str, given: str) -> Ed25519PublicKey:
    """The key in ``ed25519:BASE64`` text (``given``: what the user wrote, for the error)."""
    if not value.startswith(PUBLIC_PREFIX):
        raise SecurityError(
            f"{given!r} holds no public key (ed25519:..., from `mcast keygen --sign`)"
        )
    try:
        raw = base64.b64decode(value[len(PUBLIC_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise SecurityError(f"{given!r} is not a valid Ed25519 public key") from None


class AnnounceSigner:
    """Appends the trailer that signs an announce datagram."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.fingerprint = fingerprint(private.public_key())

    def sign(self, datagram: bytes) -> bytes:
        """``datagram`` (header and JSON body) with its signature trailer."""
        return datagram + b"\x00" + self.fingerprint + self._private.sign(CONTEXT + datagram)


class AnnounceCheck:
    """Decides whether an announce may start (or update) a transfer; says why not.

    ``trusted``: the public keys whose signatures count (None: signatures not required).
    ``max_skew``: seconds an announce's stamp may differ from ``wall_clock()`` (None: not
    checked).
    """

    def __init__(
        self,
        trusted: list[Ed25519PublicKey] | None,
        *,
        max_skew: float | None,
        wall_clock: Callable[[], float],
    ) -> None:
        self._trusted = {fingerprint(k): k for k in trusted or []} if trusted is not None else None
        self.max_skew = max_skew
        self._clock = wall_clock

    def __call__(self, session: int, body: bytes) -> str | None:
        """None to accept the announce ``body`` of ``session``; otherwise the reason."""
        text, _, trailer = body.partition(b"\x00")
        if self._trusted is not None:
            if len(trailer) != TRAILER_SIZE - 1:
                return "unsigned announce (this receiver trusts only signed ones)"
            key_id, signature = trailer[:FINGERPRINT_SIZE], trailer[FINGERPRINT_SIZE:]
            key = self._trusted.get(key_id)
            if key is None:
                return f"announce signed by an untrusted key {key_id.hex()}"
            try:
                key.verify(signature, CONTEXT + head(ANNOUNCE, session) + text)
            except InvalidSignature:
                return f"announce with a bad signature for key {key_id.hex()} (forged)"
        if self.max_skew is not None:
            try:
                sent_at = float(json.loads(text)["time"])
            except (ValueError, KeyError, TypeError):
                return "announce without a time stamp (sealed and signed ones need one)"
            skew = sent_at - self._clock()
            if not abs(skew) <= self.max_skew:
                return (
                    f"announce stamped {skew:+.0f}s from our clock (over --max-skew "
                    f"{self.max_skew:g}s: a replay, or clocks that disagree)"
                )
        return None
