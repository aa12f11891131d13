"""Group keys and the AEAD envelope: every frame or datagram, header included, sealed.

Envelope: ``"MK" | version | cipher | key id (u32) | nonce (12) | ciphertext | tag (16)``,
cipher 0xE1 for ChaCha20-Poly1305 and 0xE2 for AES-256-GCM. The first 20 bytes are the
associated data, so cipher, key id and nonce cannot be altered either. A sender seals with
AES-256-GCM where the CPU has AES instructions (three times faster per 1.4 kB datagram here:
0.6 against 1.8 us) and ChaCha20-Poly1305 elsewhere (constant time without them); every
receiver opens both.

Nonces: 8 random bytes drawn when the key ring is made, then a 32-bit counter; after 2**32
frames a new random prefix. Two rings of one key collide only if their random prefixes do
(64 bits), so keep a key for fewer than 2**32 rings or senders: rotate long before that.
Key files are read and written by ``keyfiles.py``; this module touches no file.

Keys come from a passphrase through scrypt (RFC 7914; n=2**15, r=8, p=1) with a salt bound to
the group address and port, so every member of one group derives the same key while no
precomputed table serves two deployments; or from a key file made by ``mcast keygen``
(refused when other users can read it). The key id is derived from the key, so members agree
on it without configuration and a node can hold several keys while they rotate.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import MulticastError
from .magics import SEALED_GCM_TYPE, SEALED_TYPE, DatagramKind, kind_of
from .wire import ENVELOPE, MAGIC, TAG_SIZE, VERSION

__all__ = [
    "CIPHERS",
    "OPEN_GROUP_WARNING",
    "GroupKey",
    "KeyRing",
    "ReplayWindow",
    "SecurityError",
    "key_from_passphrase",
    "warn_open_group",
]

_SEALED = (DatagramKind.SEALED,)
CIPHERS = {"chacha20-poly1305": SEALED_TYPE, "aes-256-gcm": SEALED_GCM_TYPE}
# What a ring seals with when not told; runtimes pass the host's best
# (``transport.platform.default_cipher``: ChaCha20-Poly1305 without AES instructions).
DEFAULT_CIPHER = "aes-256-gcm"
_AEADS: dict[int, type[ChaCha20Poly1305] | type[AESGCM]] = {
    SEALED_TYPE: ChaCha20Poly1305,
    SEALED_GCM_TYPE: AESGCM,
}

KEY_SIZE = 32
OPEN_GROUP_WARNING = (  # %s: the group; said once per group and process
    "group %s is open (no key): anyone on the path can read, forge and evict; see docs/security.md"
)
_WARNED_OPEN: set[str] = set()


def warn_open_group(group: object) -> None:
    """Log ``OPEN_GROUP_WARNING`` for ``group``, once per process (three nodes of a demo in
    one process: one line, not three)."""
    if str(group) not in _WARNED_OPEN:
        _WARNED_OPEN.add(str(group))
        logging.getLogger("mcastkit").warning(OPEN_GROUP_WARNING, group)


_SCRYPT_SALT = b"mcastkit group key v2|"
_SCRYPT_N = 2**15


class SecurityError(MulticastError):
    """A key could not be made or loaded (bad passphrase input, unreadable key file)."""


@dataclass(frozen=True)
class GroupKey:
    """A 256-bit group key and its id."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_SIZE:
            raise SecurityError(f"a group key is {KEY_SIZE} bytes, not {len(self.secret)}")

    @property
    def key_id(self) -> int:
        """32-bit id derived from the key (never reveals it)."""
        digest = hashlib.blake2s(self.secret, digest_size=4, person=b"mk-kid").digest()
        return int.from_bytes(digest, "big")


def key_from_passphrase(passphrase: str, *, group: object) -> GroupKey:
    """Derive the group key from a passphrase with scrypt, salted with the group.

    ``group``: the group as ``"239.1.2.3:5000"``, ``"[ff15::1]:5000"`` or a GroupSpec; an
    interface suffix does not count, so members on different interfaces agree.
    """
    if not passphrase:
        raise SecurityError("the passphrase is empty: an empty passphrase is no key")
    salt = _SCRYPT_SALT + _group_salt(group)
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=_SCRYPT_N, r=8, p=1)
    return GroupKey(kdf.derive(passphrase.encode("utf-8")))


def _group_salt(group: object) -> bytes:
    from .addr import GroupSpec, parse_group

    spec = group if isinstance(group, GroupSpec) else parse_group(str(group))
    host = f"[{spec.group}]" if spec.family == 6 else str(spec.group)
    return f"{host}:{spec.port}".encode()


class KeyRing:
    """The keys a node accepts; the first one (or ``use``) seals outgoing frames.

    ``cipher`` (see CIPHERS) is what this ring seals with; it opens envelopes of either.
    """

    def __init__(
        self,
        keys: list[GroupKey],
        random_bytes: Callable[[int], bytes],
        *,
        cipher: str | None = None,
    ) -> None:
        if not keys:
            raise SecurityError("a key ring needs at least one key")
        cipher = cipher or DEFAULT_CIPHER
        if cipher not in CIPHERS:
            raise SecurityError(f"unknown cipher {cipher!r}; choose from {', '.join(CIPHERS)}")
        self.cipher = cipher
        self._kind = CIPHERS[cipher]
        self._aeads: dict[tuple[int, int], ChaCha20Poly1305 | AESGCM] = {}
        for key in keys:
            self._add(key)
        self._current = keys[0].key_id
        self._random = random_bytes
        self._prefix = random_bytes(8)
        self._counter = 0

    def _add(self, key: GroupKey) -> None:
        for kind, aead in _AEADS.items():
            self._aeads.setdefault((kind, key.key_id), aead(key.secret))

    def use(self, key: GroupKey) -> None:
        """Seal with ``key`` from now on (adding it when new): key rotation."""
        self._add(key)
        self._current = key.key_id

    def retire(self, key: GroupKey) -> None:
        """Stop accepting ``key``."""
        if key.key_id != self._current:
            for kind in _AEADS:
                self._aeads.pop((kind, key.key_id), None)

    def _nonce(self) -> bytes:
        self._counter += 1
        if self._counter >= 1 << 32:
            self._prefix, self._counter = self._random(8), 1
        return self._prefix + self._counter.to_bytes(4, "big")

    def seal(self, frame: bytes | bytearray | memoryview) -> bytes:
        """Wrap a whole encoded frame (or datagram) in an envelope."""
        nonce = self._nonce()
        head = ENVELOPE.pack(MAGIC, VERSION, self._kind, self._current, nonce)
        return head + self._aeads[self._kind, self._current].encrypt(nonce, frame, head)

    def open_spans_into(
        self, buffer: memoryview, spans: list[tuple[int, int]], out: memoryview
    ) -> tuple[list[tuple[int, int]], list[str]]:
        """Open the envelopes at ``spans`` of ``buffer`` into ``out`` (as long as the spans
        together): the spans of the frames there, and why each other one was dropped."""
        opened: list[tuple[int, int]] = []
        dropped: list[str] = []
        unpack_from, head_size = ENVELOPE.unpack_from, ENVELOPE.size
        aeads = self._aeads
        at = 0
        for start, end in spans:
            size = end - start - head_size - TAG_SIZE
            if size < 0:
                looks_sealed = end - start >= 4 and kind_of(buffer[start:end]) in _SEALED
                dropped.append("short-envelope" if looks_sealed else "unsealed")
                continue
            magic, version, kind, key_id, nonce = unpack_from(buffer, start)
            if magic != MAGIC or version != VERSION or kind not in _AEADS:
                dropped.append("unsealed")
                continue
            aead = aeads.get((kind, key_id))
            if aead is None:
                dropped.append("unknown-key")
                continue
            body = start + head_size
            try:
                aead.decrypt_into(nonce, buffer[body:end], buffer[start:body], out[at : at + size])
            except InvalidTag:
                dropped.append("forged")
                continue
            opened.append((at, at + size))
            at += size
        return opened, dropped

    def open_untrusted(self, data: bytes | bytearray | memoryview) -> bytes | str:
        """The frame inside an envelope, or why it was dropped (never raises)."""
        if len(data) < ENVELOPE.size + TAG_SIZE:
            return "short-envelope"
        _magic, _version, kind, key_id, nonce = ENVELOPE.unpack_from(data)
        aead = self._aeads.get((kind, key_id))
        if aead is None:
            return "unknown-key" if kind in _AEADS else "unknown-cipher"
        head = bytes(data[: ENVELOPE.size])
        try:
            return aead.decrypt(nonce, data[ENVELOPE.size :], head)
        except InvalidTag:
            return "forged"


class ReplayWindow:
    """Sliding window over one sender's sequence numbers (RFC 4303 3.4.3 style, 64 wide)."""

    __slots__ = ("behind", "behind_run", "bitmap", "highest")
    SIZE = 64
    # Open groups: a forged frame can jump the window far ahead of its sender. This many
    # frames in a row, this far behind, are the real sender: the window follows it back.
    RECOVER_AFTER = 3
    RECOVER_GAP = 4096

    def __init__(self) -> None:
        self.highest = -1
        self.bitmap = 0
        self.behind = 0
        self.behind_run = 0

    def check_and_mark(self, seq: int, recover: bool = False) -> str | None:
        """None if ``seq`` is new (and remember it); otherwise 'replay' or 'too-old'.

        ``recover`` (open groups only, where anyone can forge a frame and a replay is no
        attack): a run of frames far behind a jump moves the window back to them, so one
        forged seq cannot shut a member out. Sealed groups never move back."""
        if seq > self.highest:
            shift = seq - self.highest
            # O(1) for any jump: shifting by 2^32 built a 2^32-bit integer (512 MiB, seconds).
            kept = (self.bitmap << shift) & ((1 << self.SIZE) - 1) if shift < self.SIZE else 0
            self.bitmap = kept | 1
            self.highest = seq
            return None
        offset = self.highest - seq
        if offset >= self.SIZE:
            if recover and offset >= self.RECOVER_GAP and self._follows(seq):
                self.highest, self.bitmap = seq, 1
                return None
            return "too-old"
        if self.bitmap & (1 << offset):
            return "replay"
        self.bitmap |= 1 << offset
        return None

    def _follows(self, seq: int) -> bool:
        """One more frame of a run far behind the window; True once the run is long enough."""
        consecutive = self.behind_run and 0 < seq - self.behind <= self.SIZE
        self.behind_run = self.behind_run + 1 if consecutive else 1
        self.behind = seq
        if self.behind_run < self.RECOVER_AFTER:
            return False
        self.behind = self.behind_run = 0
        return True
