"""Secrets on disk: group key files (``mcast keygen``), passphrase files, Ed25519 signing key
files (``mcast keygen --sign``) and trusted public keys given as files. Every secret file is
created 0600 and never overwritten, and refused when other users can read it.

The keys themselves (``security.GroupKey``, ``transfer.trust``) touch no file; this is the
room that does.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .security import KEY_SIZE, GroupKey, SecurityError
from .transfer.trust import PUBLIC_PREFIX, public_key_from_text, public_text

__all__ = [
    "check_private",
    "load_key_file",
    "load_public_key",
    "load_signing_key",
    "read_passphrase_file",
    "write_key_file",
    "write_new_key_file",
    "write_signing_key",
]


def check_private(path: str | Path, what: str) -> None:
    """Refuse a secret file that users other than its owner can read or write."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SecurityError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(
            f"{what} {path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"fix: chmod 600 {path}"
        )


def read_passphrase_file(path: str | Path) -> str:
    """A passphrase from the first line of a private file."""
    check_private(path, "passphrase file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"cannot read passphrase file {path}: {exc}") from None
    lines = text.splitlines()
    passphrase = lines[0] if lines else ""
    if not passphrase:
        raise SecurityError(f"passphrase file {path} is empty")
    return passphrase


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
    write_new_key_file(target, body, 0o600)
    return key


def write_new_key_file(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``text`` (and a newline), never replacing a file that exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise SecurityError(f"{path} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise SecurityError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def load_key_file(path: str | Path) -> GroupKey:
    """Read a key file written by ``mcast keygen`` (refused when others can read it)."""
    check_private(path, "key file")
    try:
        data = json.loads(Path(path).read_text())
        secret = base64.b64decode(data["key"], validate=True)
    except OSError as exc:
        raise SecurityError(f"cannot read key file {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError):
        raise SecurityError(f"{path} is not an mcastkit key file (see `mcast keygen`)") from None
    return GroupKey(secret)


def write_signing_key(path: str | Path) -> Ed25519PublicKey:
    """A new Ed25519 key: private in ``path`` (0600, never overwritten), public in
    ``path.pub``. Returns the public key."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    target = Path(path)
    body = json.dumps(
        {
            "mcastkit-signing-key": 1,
            "public": public_text(public),
            "key": base64.b64encode(private.private_bytes_raw()).decode(),
        }
    )
    public_file = Path(f"{target}.pub")
    if public_file.exists():  # check both before writing either
        raise SecurityError(f"{public_file} exists; refusing to overwrite a key")
    write_new_key_file(target, body, 0o600)
    write_new_key_file(public_file, public_text(public), 0o644)
    return public


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The private key in a file written by ``mcast keygen --sign`` (refused when others
    can read it)."""
    check_private(path, "signing key")
    try:
        data = json.loads(Path(path).read_text())
        raw = base64.b64decode(data["key"], validate=True)
        return Ed25519PrivateKey.from_private_bytes(raw)
    except OSError as exc:
        raise SecurityError(f"cannot read signing key {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SecurityError(
            f"{path} is not an mcastkit signing key (make one with `mcast keygen --sign FILE`)"
        ) from None


def load_public_key(text: str) -> Ed25519PublicKey:
    """A trusted key: ``ed25519:BASE64`` as printed by ``mcast keygen --sign``, or a file
    holding it (the ``.pub`` file)."""
    value = text.strip()
    if not value.startswith(PUBLIC_PREFIX):
        try:
            value = Path(value).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            raise SecurityError(
                f"{text!r} is neither a public key (ed25519:...) nor a readable file: {reason}"
            ) from None
    return public_key_from_text(value, text)
