"""What a receiver keeps of an unfinished file, so a later transfer of it can resume.

Beside the partial file (its random hidden temporary name) a small state file,
``.NAME.mcastkit-state``, records which blocks are on disk, the block size and the file's
sha256. A later transfer of a file with that name, size and sha256 takes the partial file
over and asks only for the blocks it lacks. The sha256 must match: a file of the same name
with other content starts from scratch.

Everything here distrusts the directory: a state file is read only if it is a regular file
of ours and small, the partial it names must be one of our own temporary names, a regular
file owned by us with one link and the announced size, opened without following links.
Anything odd means "no partial". Since the final sha256 check still runs, a planted or
damaged state can at worst make a transfer fail; it can never put a wrong file in place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import secrets
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import PENDING_DIGEST, FileInfo

__all__ = [
    "PARTIALS_MAX_BYTES",
    "PARTIAL_MAX_AGE",
    "Partial",
    "claim",
    "expire_partials",
    "find_partial",
    "forget_partial",
    "is_part_name",
    "recorded_part",
    "remove_state",
    "save_state",
    "state_path",
]

STATE_SUFFIX = ".mcastkit-state"
PART_SUFFIX = ".mcastkit-part"
MAX_STATE_BYTES = 4 << 20
PARTIAL_MAX_AGE = 7 * 86400.0  # a partial not resumed for a week is removed when next seen
PARTIALS_MAX_BYTES = 16 << 30  # what kept partials in one directory may hold, oldest go first
ORPHAN_GRACE = 60.0  # a partial nobody records or holds, this old, is a killed receiver's
_TOKEN = re.compile(r"[0-9a-f]{16}")
_STATE_TOKEN = re.compile(r"[0-9a-f]{8}")  # save_state's temporary copies
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def state_path(directory: Path, name: str) -> Path:
    """Where the state of file ``name``'s partial is kept."""
    return directory / f".{name}{STATE_SUFFIX}"


def part_name(name: str) -> str:
    """A fresh random temporary name for file ``name``."""
    return f".{name}.{secrets.token_hex(8)}{PART_SUFFIX}"


@dataclass
class Partial:
    """An earlier transfer's partial file, open for writing, and what it holds."""

    path: Path
    fd: int
    sha256: str
    block_size: int
    held: bytearray  # a byte per block: 1 = on disk


def claim(fd: int) -> bool:
    """Hold ``fd``'s partial for this transfer: False when another process holds it. The
    lock goes with the process, so a partial nobody holds is nobody's work in progress."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def find_partial(directory: Path, name: str, info: FileInfo, trust: str = "") -> Partial | None:
    """The partial kept for ``info`` (same name and size) in ``directory``, or None.

    ``trust``: how this transfer is authenticated (receive_files says: sealed or open,
    signed or not). A partial written under another level is never taken over: blocks an
    unauthenticated transfer wrote would otherwise feed an authenticated one."""
    state = _read_state(state_path(directory, name))
    if state is None or state.get("trust", "") != trust:
        return None
    try:
        part = str(state["part"])
        sha256 = str(state["sha256"])
        block_size = int(state["block_size"])
        size = int(state["size"])
        packed = base64.b64decode(state["held"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if (
        not is_part_name(part, name)
        or size != info.size
        or not _HEX64.fullmatch(sha256)
        or sha256 == PENDING_DIGEST
        or not 64 <= block_size <= 65000
    ):
        return None
    blocks = info.blocks(block_size)
    try:
        unpacker = zlib.decompressobj()
        held = bytearray(unpacker.decompress(packed, blocks + 1))
    except zlib.error:
        return None
    if len(held) != blocks or held.translate(None, b"\x00\x01"):
        return None
    path = directory / part
    try:
        fd = os.open(path, os.O_RDWR | _NOFOLLOW)
    except OSError:
        return None
    facts = os.fstat(fd)
    if (
        not stat.S_ISREG(facts.st_mode)
        or facts.st_nlink != 1
        or facts.st_uid != os.geteuid()
        or facts.st_size != info.size
        or not claim(fd)  # another receiver is resuming it now
    ):
        os.close(fd)
        return None
    return Partial(path, fd, sha256, block_size, held)


def is_part_name(part: str, name: str) -> bool:
    """True when ``part`` is a name ``part_name(name)`` could have made (in this directory)."""
    token = part[len(name) + 2 : -len(PART_SUFFIX)]
    return (
        part.startswith(f".{name}.")
        and part.endswith(PART_SUFFIX)
        and _TOKEN.fullmatch(token) is not None
    )


def recorded_part(directory: Path, name: str) -> str | None:
    """The partial file name the state kept for ``name`` records, if any."""
    state = _read_state(state_path(directory, name))
    return None if state is None else str(state.get("part"))


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        facts = os.fstat(fd)
        if (
            not stat.S_ISREG(facts.st_mode)
            or facts.st_uid != os.geteuid()
            or facts.st_size > MAX_STATE_BYTES
        ):
            return None
        data = json.loads(os.read(fd, MAX_STATE_BYTES + 1))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("mcastkit-partial") != 1:
        return None
    return data


def save_state(directory: Path, name: str, part: Path, info: FileInfo, block_size: int,
               held: bytearray, trust: str = "") -> None:  # fmt: skip
    """Record which blocks of ``part`` are on disk (atomically: a new file renamed over)."""
    body = json.dumps(
        {
            "mcastkit-partial": 1,
            "trust": trust,
            "part": part.name,
            "name": info.name,
            "size": info.size,
            "sha256": info.sha256,
            "block_size": block_size,
            "held": base64.b64encode(zlib.compress(bytes(held), 1)).decode(),
        }
    ).encode()
    target = state_path(directory, name)
    temp = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def remove_state(directory: Path, name: str) -> None:
    """Forget a partial's state (the transfer finished, or its data is no use), and the
    half-written copies of it a receiver killed in the middle of ``save_state`` left."""
    with contextlib.suppress(OSError):
        state_path(directory, name).unlink()
    prefix = state_path(directory, name).name + "."
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            token = entry.name[len(prefix) : -len(".tmp")]
            if (
                entry.name.startswith(prefix)
                and entry.name.endswith(".tmp")
                and _STATE_TOKEN.fullmatch(token)
                and entry.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def forget_partial(directory: Path, name: str) -> None:
    """``name`` is complete in ``directory``: the partial its record names (when no other
    transfer holds it) and the record go, whatever content they were for."""
    part = recorded_part(directory, name)
    if part is not None and is_part_name(part, name) and not _remove_free(directory / part):
        return  # another receiver is resuming it: its record stays too
    remove_state(directory, name)


def _remove_free(path: Path) -> bool:
    """Remove the partial ``path`` unless a transfer holds it (or it is not ours); True
    when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        facts = os.fstat(fd)
        if not stat.S_ISREG(facts.st_mode) or facts.st_uid != os.geteuid() or not claim(fd):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class _Kept:
    name: str
    part: str | None
    age: float
    holds: int  # bytes of disk


def expire_partials(
    directory: Path,
    now: float,
    max_age: float = PARTIAL_MAX_AGE,
    max_bytes: int = PARTIALS_MAX_BYTES,
) -> int:
    """Give back what interrupted transfers hold in ``directory`` (not below it): records
    older than ``max_age`` seconds and their partials; partials no record names and no
    process holds (a receiver killed before its first record); and, while the kept partials
    hold more than ``max_bytes`` of disk, the oldest. Only regular files of our own names
    are touched, and never a partial a running transfer holds. How many partials went."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    kept: list[_Kept] = []
    parts: dict[str, os.DirEntry[str]] = {}
    for entry in entries:
        try:
            facts = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(facts.st_mode) or not entry.name.startswith("."):
            continue
        if entry.name.endswith(STATE_SUFFIX):
            name = entry.name[1 : -len(STATE_SUFFIX)]
            part = recorded_part(directory, name)
            part = part if part is not None and is_part_name(part, name) else None
            kept.append(_Kept(name, part, now - facts.st_mtime, 0))
        elif entry.name.endswith(PART_SUFFIX):
            parts[entry.name] = entry
    for item in kept:
        if item.part in parts:
            with contextlib.suppress(OSError):
                item.holds = parts.pop(item.part).stat(follow_symlinks=False).st_blocks * 512
    removed = 0
    for part, entry in parts.items():  # named by no record
        name = part[1 : -len(PART_SUFFIX) - 17]
        with contextlib.suppress(OSError):
            if is_part_name(part, name) and now - entry.stat().st_mtime > ORPHAN_GRACE:
                removed += _remove_free(directory / part)
    total = sum(item.holds for item in kept)
    for item in sorted(kept, key=lambda k: -k.age):  # the oldest first
        if item.age <= max_age and total <= max_bytes:
            break
        if item.part is None or _remove_free(directory / item.part):
            remove_state(directory, item.name)
            total -= item.holds
            removed += item.part is not None
    return removed
