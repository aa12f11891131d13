"""File distribution protocol (sans-I/O): announce, register, data passes, NAK repair, verify.

One sender multicasts blocks of one or more files; receivers answer the sender by unicast.
1. The sender multicasts ANNOUNCE (files: name, size, sha256; block size) until the expected
   receivers REGISTER (each acknowledged with REG_ACK), or its registration wait ends.
2. Pass 0 multicasts every block; then STATUS_REQ asks each receiver for its missing blocks.
   Receivers answer STATUS with ranges of missing blocks, or MISSING_MAP with a bitmap of
   them when the loss is dense (11,200 blocks a datagram, where ranges would need
   thousands), or COMPLETE once every block is written and each file's sha256 checked.
   Each later pass resends the union of what is missing. A receiver that answers no status
   request for ``receiver_timeout`` is failed.
3. A receiver writes to a temporary name, and renames it to the final one only after the
   sha256 matches: a crash, a full disk or a bad hash never leaves a wrong file in place.

Wire: ``"MKT1" | type (u8) | 3 pad | session (u64)`` then a body per type (see encode_*).
Everything received is untrusted: decoders return None for anything malformed.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass
from enum import IntEnum

from ..magics import TRANSFER_MAGIC
from ..peers import Address

__all__ = [
    "ANNOUNCE",
    "BLOCK_SIZE",
    "COMPLETE",
    "DATA",
    "DONE_ACK",
    "REGISTER",
    "REG_ACK",
    "STATUS",
    "STATUS_REQ",
    "AnnounceParts",
    "FileInfo",
    "decode_untrusted",
]

MAGIC = TRANSFER_MAGIC
HEAD = struct.Struct("!4sB3xQ")


class TransferKind(IntEnum):
    """What a file-distribution datagram carries."""

    ANNOUNCE = 1
    REGISTER = 2
    REG_ACK = 3
    DATA = 4
    STATUS_REQ = 5
    STATUS = 6
    COMPLETE = 7
    DONE_ACK = 8
    ABORT = 9
    PROGRESS_REQ = 10  # rate feedback during a pass
    PROGRESS = 11
    MISSING_MAP = 12  # like STATUS, as a bitmap: for dense loss, where ranges would not fit
    WANT_COPIES = 13  # a receiver multicast does not reach asks the sender for unicast copies


ANNOUNCE, REGISTER, REG_ACK, DATA, STATUS_REQ, STATUS, COMPLETE, DONE_ACK, ABORT = (
    TransferKind.ANNOUNCE,
    TransferKind.REGISTER,
    TransferKind.REG_ACK,
    TransferKind.DATA,
    TransferKind.STATUS_REQ,
    TransferKind.STATUS,
    TransferKind.COMPLETE,
    TransferKind.DONE_ACK,
    TransferKind.ABORT,
)
PROGRESS_REQ, PROGRESS = TransferKind.PROGRESS_REQ, TransferKind.PROGRESS
PROGRESS_BODY = struct.Struct("!QII")  # receiver id, blocks received, kernel drops so far
# ... then, optionally, one byte: how full the receiver's socket buffer is, in percent. It
# rises before anything is dropped: the sender slows down before it costs a repair.
Buffer = bytes | bytearray | memoryview  # what a block may arrive as (no copy)
Out = list[tuple[bytes, Address | None]]  # datagrams to send; None: to the group
DATA_HEAD = struct.Struct("!HI")  # file index, block index
DATA_HEADER = struct.Struct(HEAD.format + DATA_HEAD.format[1:])  # HEAD + DATA_HEAD in one
RECEIVER = struct.Struct("!Q")  # receiver id
PASS = struct.Struct("!I")
RANGE = struct.Struct("!HII")  # file index, first missing block, count
# One datagram in a 1500-byte Ethernet frame: 1472 - 16 (header) - 6 (data head) = 1450.
BLOCK_SIZE = 1450
MAX_RANGES = 100  # ranges per STATUS datagram (1200 bytes); the rest come next round
MISSING_MAP = TransferKind.MISSING_MAP
MAP_HEAD = struct.Struct("!QIHI")  # receiver id, pass, file index, first block of the map
MAP_BYTES = 1400
MAP_BLOCKS = MAP_BYTES * 8  # blocks one MISSING_MAP covers (a bit each: 1 = missing)
# A byte of the map <-> eight bytes of a bitmap with a byte per block (1 = missing).
_UNPACK = [bytes((value >> (7 - bit)) & 1 for bit in range(8)) for value in range(256)]
_PACK = {pattern: value for value, pattern in enumerate(_UNPACK)}
_MISSING = bytes.maketrans(b"\x00\x01", b"\x01\x00")  # have <-> missing
# The announce must fit one 1472-byte datagram with its header (16), a signature trailer
# (73, transfer/trust.py) and a sealed envelope (36). Longer lists go in several parts.
MAX_ANNOUNCE_JSON = 1340
MAX_FILES = 65535  # entries in one transfer (a data block names its file in 16 bits)
MAX_PARTS = 4096  # announce datagrams for one list
# Tiny blocks would make the receiver's bitmap (a byte a block) cost a byte per 16 of file.
MIN_BLOCK_SIZE = 64


# A STATUS or MISSING_MAP for this pass: what a resuming receiver lacks, before the first
# pass (so it skips what the receiver already holds). REGISTER announces such a report with
# a flags byte after a NUL that ends the name.
PREPASS = 0xFFFFFFFF
RESUMING = 0x01

# An announce may go out before the sender has hashed its files (hashing 256 MiB takes longer
# than registering the receivers): the digest is then this, and a later announce of the same
# session carries the real one. A receiver verifies only once it has it.
PENDING_DIGEST = "0" * 64


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class FileInfo:
    """One file (or directory) of a transfer: ``name`` is a relative path, ``/``-separated.

    ``mode`` and ``mtime`` travel for receivers that preserve them; a directory has size 0,
    no blocks and the sha256 of nothing.
    """

    name: str
    size: int
    sha256: str
    mode: int | None = None
    mtime: float | None = None
    is_dir: bool = False

    def with_digest(self, sha256: str) -> FileInfo:
        """The same entry with its sha256 known."""
        return dataclasses.replace(self, sha256=sha256)

    def blocks(self, block_size: int) -> int:
        """Number of blocks (an empty file has none)."""
        return (self.size + block_size - 1) // block_size

    @property
    def digest_pending(self) -> bool:
        """The sender has not sent this file's sha256 yet."""
        return self.sha256 == PENDING_DIGEST


@dataclass
class Message:
    """A decoded datagram."""

    kind: int
    session: int
    body: bytes


def head(kind: int, session: int) -> bytes:
    """The common header."""
    return HEAD.pack(MAGIC, kind, session)


def decode_untrusted(data: bytes) -> Message | None:
    """Header and body, or None (never raises)."""
    if len(data) < HEAD.size or data[:4] != MAGIC:
        return None
    _magic, kind, session = HEAD.unpack_from(data)
    if not ANNOUNCE <= kind <= TransferKind.WANT_COPIES:
        return None
    return Message(kind, session, data[HEAD.size :])


def _entry(info: FileInfo) -> dict[str, object]:
    entry: dict[str, object] = {"name": info.name, "size": info.size, "sha256": info.sha256}
    if info.mode is not None:
        entry["mode"] = info.mode
    if info.mtime is not None:
        entry["mtime"] = round(info.mtime, 6)
    if info.is_dir:
        entry["dir"] = 1
    return entry


def encode_announces(
    session: int,
    files: list[FileInfo],
    block_size: int,
    *,
    sent_at: float | None = None,
    sync: bool = False,
) -> list[bytes]:
    """ANNOUNCE datagrams: the file list as JSON, in as many parts as it needs (each part
    says which entries it holds), stamped with the sender's clock (``sent_at``, seconds
    since the epoch) when given. ``sync``: receivers skip files they already hold.
    ValueError if the list is too long for one transfer."""
    if len(files) > MAX_FILES:
        raise ValueError(f"{len(files):,} files; one transfer holds {MAX_FILES:,}")
    fixed: dict[str, object] = {"block_size": block_size}
    if sent_at is not None:
        fixed["time"] = round(sent_at, 3)
    if sync:
        fixed["sync"] = 1
    entries = [json.dumps(_entry(f), separators=(",", ":")) for f in files]
    # Parts are filled greedily; the header fields take at most 120 bytes.
    room = MAX_ANNOUNCE_JSON - len(json.dumps(fixed, separators=(",", ":"))) - 120
    groups: list[tuple[int, list[str]]] = []
    for index, entry in enumerate(entries):
        if len(entry) > room:
            raise ValueError(f"the entry for {files[index].name[:60]!r} is too long to announce")
        if not groups or sum(len(e) + 1 for e in groups[-1][1]) + len(entry) > room:
            groups.append((index, []))
        groups[-1][1].append(entry)
    groups = groups or [(0, [])]
    if len(groups) > MAX_PARTS:
        raise ValueError(f"the file list needs {len(groups)} announces; at most {MAX_PARTS}")
    datagrams = []
    for part, (first, chunk) in enumerate(groups):
        fields = dict(fixed)
        if len(groups) > 1:
            fields.update(part=part, parts=len(groups), first=first, total=len(files))
        head_json = json.dumps(fields, separators=(",", ":"))[:-1]
        body = f'{head_json},"files":[{",".join(chunk)}]}}'.encode()
        datagrams.append(head(ANNOUNCE, session) + body)
    return datagrams


def encode_announce(
    session: int, files: list[FileInfo], block_size: int, *, sent_at: float | None = None
) -> bytes:
    """One ANNOUNCE holding the whole list (ValueError if it needs more than one)."""
    datagrams = encode_announces(session, files, block_size, sent_at=sent_at)
    if len(datagrams) > 1:
        raise ValueError("the file list needs more than one announce")
    return datagrams[0]


@dataclass
class Announce:
    """One decoded ANNOUNCE: part ``part`` of ``parts``, entries from index ``first``."""

    files: list[FileInfo]
    block_size: int
    part: int = 0
    parts: int = 1
    first: int = 0
    total: int = 0
    sync: bool = False


def decode_announce(body: bytes) -> Announce | None:
    """An untrusted ANNOUNCE body (a signature trailer after a NUL is ignored here:
    transfer/trust.py checks it), or None."""
    try:
        data = json.loads(body.partition(b"\x00")[0])
        block_size = int(data["block_size"])
        files = [_decode_entry(f) for f in data["files"]]
        parts = int(data.get("parts", 1))
        part = int(data.get("part", 0))
        first = int(data.get("first", 0))
        total = int(data.get("total", len(files)))
        sync = bool(data.get("sync", 0))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None
    if not MIN_BLOCK_SIZE <= block_size <= 65000 or not files or total > MAX_FILES:
        return None
    if not (0 <= part < parts <= MAX_PARTS and first >= 0 and first + len(files) <= total):
        return None
    if any(not 0 <= f.size < 1 << 62 or len(f.sha256) != 64 for f in files):
        return None
    if any(f.is_dir and f.size for f in files):
        return None
    return Announce(files, block_size, part, parts, first, total, sync)


GATHERED_SESSIONS = 2  # sessions whose announce parts a receiver holds at once


class AnnounceParts:
    """The parts of long file lists as they come in, until one list is whole. Parts are
    held as they came (bytes, decoded again at the end), for two sessions at most: an
    outsider's parts cost at most 2 x 4,096 datagrams, and cannot keep ours out for longer
    than it takes to send them again."""

    def __init__(self) -> None:
        # session -> part -> ((parts, total, block size), body)
        self._held: dict[int, dict[int, tuple[tuple[int, int, int], bytes]]] = {}

    def __len__(self) -> int:
        """Sessions whose parts are held."""
        return len(self._held)

    def gather(self, session: int, announce: Announce, body: bytes) -> list[FileInfo] | None:
        """Take one part; the whole list once every part is in, else None."""
        parts = self._held.get(session)
        if parts is None:
            if len(self._held) >= GATHERED_SESSIONS:
                del self._held[next(iter(self._held))]
            parts = self._held[session] = {}
        known = next(iter(parts.values()), None)
        shape = (announce.parts, announce.total, announce.block_size)
        if known is not None and known[0] != shape:
            return None  # parts that do not agree: keep the first seen
        parts[announce.part] = (shape, body)
        if len(parts) < announce.parts:
            return None
        del self._held[session]
        files: list[FileInfo] = []
        for number in range(announce.parts):
            decoded = decode_announce(parts[number][1])
            if decoded is None or decoded.first != len(files):
                return None
            files.extend(decoded.files)
        return files if len(files) == announce.total else None


def _decode_entry(entry: dict[str, object]) -> FileInfo:
    mode = entry.get("mode")
    mtime = entry.get("mtime")
    size = entry["size"]
    if not isinstance(size, int) or isinstance(size, bool):
        raise ValueError("size")
    return FileInfo(
        str(entry["name"]),
        size,
        str(entry["sha256"]),
        None if mode is None else int(mode) & 0o7777,  # type: ignore[call-overload]
        None if mtime is None else float(mtime),  # type: ignore[arg-type]
        bool(entry.get("dir", 0)),
    )


def encode_ranges(
    session: int, receiver: int, pass_number: int, ranges: list[tuple[int, int, int]]
) -> bytes:
    """STATUS: which blocks are missing (at most MAX_RANGES)."""
    body = RECEIVER.pack(receiver) + PASS.pack(pass_number)
    body += b"".join(RANGE.pack(*r) for r in ranges[:MAX_RANGES])
    return head(STATUS, session) + body


def decode_ranges(body: bytes) -> tuple[int, int, list[tuple[int, int, int]]] | None:
    """Receiver id, pass and missing ranges from an untrusted STATUS body, or None."""
    fixed = RECEIVER.size + PASS.size
    if len(body) < fixed or (len(body) - fixed) % RANGE.size:
        return None
    (receiver,) = RECEIVER.unpack_from(body)
    (pass_number,) = PASS.unpack_from(body, RECEIVER.size)
    ranges = [RANGE.unpack_from(body, offset) for offset in range(fixed, len(body), RANGE.size)]
    return receiver, pass_number, ranges


def encode_missing_map(
    session: int, receiver: int, pass_number: int, file_index: int, first: int, have: bytes
) -> bytes:
    """MISSING_MAP: which of the blocks from ``first`` are missing, given ``have`` (a byte
    per block, 1 = received; at most MAP_BLOCKS of them)."""
    missing = bytes(have[:MAP_BLOCKS]).translate(_MISSING)
    missing += bytes(-len(missing) % 8)  # blocks past the end are "not missing"
    bits = bytes(_PACK[missing[i : i + 8]] for i in range(0, len(missing), 8))
    return (
        head(MISSING_MAP, session) + MAP_HEAD.pack(receiver, pass_number, file_index, first) + bits
    )


def decode_missing_map(body: bytes) -> tuple[int, int, list[tuple[int, int, int]]] | None:
    """Receiver id, pass and missing ranges from an untrusted MISSING_MAP body, or None."""
    if len(body) <= MAP_HEAD.size or len(body) > MAP_HEAD.size + MAP_BYTES:
        return None
    receiver, pass_number, file_index, first = MAP_HEAD.unpack_from(body)
    have = bytearray(b"".join(_UNPACK[b] for b in body[MAP_HEAD.size :]).translate(_MISSING))
    ranges = [(f, first + start, count) for f, start, count in missing_ranges(have, file_index)]
    return receiver, pass_number, ranges


def missing_ranges(
    bitmap: bytearray, file_index: int, limit: int | None = None
) -> list[tuple[int, int, int]]:
    """Runs of zero bytes in a per-block bitmap, as (file, first, count); at most ``limit``."""
    ranges: list[tuple[int, int, int]] = []
    start = bitmap.find(0)
    while start != -1 and (limit is None or len(ranges) < limit):
        end = bitmap.find(1, start)
        if end == -1:
            end = len(bitmap)
        ranges.append((file_index, start, end - start))
        start = bitmap.find(0, end)
    return ranges


RESERVED_SUFFIXES = (".mcastkit-part", ".mcastkit-state", ".tmp")  # ours, in the target


def safe_path(name: str) -> list[str]:
    """A path from the network as checked components, to be joined under the target
    directory: relative, ``/``-separated, no empty, ``.`` or ``..`` component, no NUL or
    backslash, no name of ours (temporary and state files). ValueError otherwise."""
    parts = name.split("/")
    if (
        not name
        or len(name.encode("utf-8", "replace")) > 4096
        or len(parts) > 64
        or "\x00" in name
        or "\\" in name
    ):
        raise ValueError(f"unsafe file name {name[:80]!r}")
    for part in parts:
        if part in ("", ".", "..") or len(part.encode("utf-8", "replace")) > 255:
            raise ValueError(f"unsafe file name {name[:80]!r}")
        if part.startswith(".") and part.endswith(RESERVED_SUFFIXES):
            raise ValueError(f"file name {name[:80]!r} is reserved for mcastkit's own files")
    return parts


def check_tree(files: list[FileInfo]) -> None:
    """Every name safe, none twice, and no file where another entry needs a directory
    (ValueError naming the first problem)."""
    seen: dict[tuple[str, ...], bool] = {}  # path -> is a directory
    for info in files:
        parts = tuple(safe_path(info.name))
        if parts in seen:
            raise ValueError(f"{info.name!r} is announced twice")
        seen[parts] = info.is_dir
    for parts in seen:
        for depth in range(1, len(parts)):
            if seen.get(parts[:depth]) is False:
                raise ValueError(f"{'/'.join(parts[:depth])!r} is both a file and a directory")


def safe_name(name: str) -> str:
    """The last component of a checked path (see ``safe_path``)."""
    return safe_path(name)[-1]
