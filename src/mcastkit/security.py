"""Group keys and the AEAD envelope: every frame, header included, sealed with ChaCha20-Poly1305.

Envelope: ``"MK" | version | 0xE1 | key id (u32) | nonce (12) | ciphertext | tag (16)``.
The first 20 bytes are the associated data, so key id and nonce cannot be altered either.
Nonces are random (96 bits): keep a key for fewer than 2**32 frames (NIST SP 800-38D 8.3's
bound for random nonces), i.e. rotate keys long before that.

Keys come from a passphrase through scrypt (RFC 7914; n=2**15, r=8, p=1, a fixed
application salt so every member derives the same key) or from a key file made by
``mcast keygen``. The key id is derived from the key, so members agree on it without
configuration and a node can hold several keys while they rotate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import MulticastError
from .wire import ENVELOPE, MAGIC, SEALED_TYPE, TAG_SIZE, VERSION

__all__ = [
    "GroupKey",
    "KeyRing",
    "ReplayWindow",
    "SecurityError",
    "key_from_passphrase",
    "load_key_file",
    "write_key_file",
]

KEY_SIZE = 32
_SCRYPT_SALT = b"mcastkit group key v1"
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


def key_from_passphrase(passphrase: str) -> GroupKey:
    """Derive the group key from a passphrase with scrypt."""
    if not passphrase:
        raise SecurityError("the passphrase is empty")
    kdf = Scrypt(salt=_SCRYPT_SALT, length=KEY_SIZE, n=_SCRYPT_N, r=8, p=1)
    return GroupKey(kdf.derive(passphrase.encode("utf-8")))


def write_key_file(path: str | Path, key: GroupKey | None = None) -> GroupKey:
    """Write a new (or the given) key to ``path`` readable by its owner only."""
    key = key or GroupKey(os.urandom(KEY_SIZE))
    target = Path(path)
    body = json.dumps(
        {
            "mcastkit-key": 1,
            "key_id": f"{key.key_id:08x}",
            "key": base64.b64encode(key.secret).decode(),
        }
    )
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecurityError(f"{target} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise SecurityError(f"cannot create {target}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(body + "\n")
    return key


def load_key_file(path: str | Path) -> GroupKey:
    """Read a key file written by ``mcast keygen``."""
    try:
        data = json.loads(Path(path).read_text())
        secret = base64.b64decode(data["key"], validate=True)
    except OSError as exc:
        raise SecurityError(f"cannot read key file {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError):
        raise SecurityError(f"{path} is not an mcastkit key file (see `mcast keygen`)") from None
    return GroupKey(secret)


class KeyRing:
    """The keys a node accepts; the first one (or ``use``) seals outgoing frames."""

    def __init__(self, keys: list[GroupKey], random_bytes: Callable[[int], bytes]) -> None:
        if not keys:
            raise SecurityError("a key ring needs at least one key")
        self._aeads = {k.key_id: ChaCha20Poly1305(k.secret) for k in keys}
        self._current = keys[0].key_id
        self._random = random_bytes

    def use(self, key: GroupKey) -> None:
        """Seal with ``key`` from now on (adding it when new): key rotation."""
        self._aeads.setdefault(key.key_id, ChaCha20Poly1305(key.secret))
        self._current = key.key_id

    def retire(self, key: GroupKey) -> None:
        """Stop accepting ``key``."""
        if key.key_id != self._current:
            self._aeads.pop(key.key_id, None)

    def seal(self, frame: bytes) -> bytes:
        """Wrap a whole encoded frame in an envelope."""
        nonce = self._random(12)
        head = ENVELOPE.pack(MAGIC, VERSION, SEALED_TYPE, self._current, nonce)
        return head + self._aeads[self._current].encrypt(nonce, frame, head)

    def open_untrusted(self, data: bytes) -> bytes | str:
        """The frame inside an envelope, or why it was dropped (never raises)."""
        if len(data) < ENVELOPE.size + TAG_SIZE:
            return "short-envelope"
        _magic, _version, _kind, key_id, nonce = ENVELOPE.unpack_from(data)
        aead = self._aeads.get(key_id)
        if aead is None:
            return "unknown-key"
        head = data[: ENVELOPE.size]
        try:
            return aead.decrypt(nonce, data[ENVELOPE.size :], head)
        except InvalidTag:
            return "forged"


class ReplayWindow:
    """Sliding window over one sender's sequence numbers (RFC 4303 3.4.3 style, 64 wide)."""

    __slots__ = ("bitmap", "highest")
    SIZE = 64

    def __init__(self) -> None:
        self.highest = -1
        self.bitmap = 0

    def check_and_mark(self, seq: int) -> str | None:
        """None if ``seq`` is new (and remember it); otherwise 'replay' or 'too-old'."""
        if seq > self.highest:
            shift = seq - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.SIZE) - 1)
            self.highest = seq
            return None
        offset = self.highest - seq
        if offset >= self.SIZE:
            return "too-old"
        if self.bitmap & (1 << offset):
            return "replay"
        self.bitmap |= 1 << offset
        return None
