"""Where received files go: a directory, or memory (tests, embedding). I/O lives here only.

``DirectoryStorage`` writes each file under a random, exclusively created temporary name (a
planted file or symlink is never opened), allocates its space up front (the traffic cannot
fill the disk faster than the announced size), refuses an announce larger than the free
space, verifies every file's sha256, and only then links it into place, never replacing a
file of the same name unless told to. With ``resume``, an unfinished file is kept with a
record of its blocks (transfer/partial.py), and a later transfer of the same content takes
it over.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from .partial import (
    PARTIALS_MAX_BYTES,
    claim,
    expire_partials,
    find_partial,
    forget_partial,
    is_part_name,
    part_name,
    recorded_part,
    remove_state,
    save_state,
)
from .protocol import Buffer, FileInfo, safe_path

__all__ = ["DirectoryStorage", "FileSink", "MemorySink", "MemoryStorage", "free_space"]

SPACE_MARGIN = 1 << 20  # free space kept beyond the announced size


_KEPT = "exists with other content: kept it (recv-file --sync or --overwrite replaces it)"


class DirectoryStorage:
    """Files in ``directory`` (see the module docstring). ``preserve``: give each file and
    directory the mode and modification time the sender announced."""

    def __init__(
        self,
        directory: Path,
        *,
        overwrite: bool = False,
        resume: bool = False,
        preserve: bool = False,
        trust: str = "",
        max_partials: int = PARTIALS_MAX_BYTES,
    ) -> None:
        self.directory = directory
        self.overwrite = overwrite
        self.resume = resume
        self.preserve = preserve
        self.trust = trust  # partials are resumed only by transfers of the same level
        self.max_partials = max_partials  # disk the kept partials of a directory may hold

    def open(self, files: list[FileInfo], *, sync: bool = False) -> FileSink:
        """A sink for the announced files; OSError when they cannot be written here."""
        _expire_where(self.directory, files, self.max_partials)
        total = sum(f.size for f in files)
        free = free_space(self.directory)
        # A partial kept for resume already holds its file's space (allocated up front):
        # only the rest is needed, or a nearly full disk could never finish a transfer.
        held = self._held_by_partials(files) if self.resume and free is not None else 0
        if free is not None and total - held + SPACE_MARGIN > free:
            kept = f" ({held:,} of them already held by partial files)" if held else ""
            raise OSError(
                errno.ENOSPC,
                f"not enough space: {total:,} bytes announced{kept}, {free:,} free",
                str(self.directory),
            )
        return FileSink(
            self.directory,
            files,
            overwrite=self.overwrite,
            resume=self.resume,
            sync=sync,
            preserve=self.preserve,
            trust=self.trust,
        )

    def _held_by_partials(self, files: list[FileInfo]) -> int:
        """Bytes of disk the partial files kept for ``files`` already hold."""
        held = 0
        for info in files:
            if info.is_dir or not info.size:
                continue
            try:
                parts = safe_path(info.name)
            except ValueError:
                continue
            parent = self.directory.joinpath(*parts[:-1])
            part = recorded_part(parent, parts[-1])
            if part is None or not is_part_name(part, parts[-1]):
                continue
            try:
                facts = os.lstat(parent / part)
            except OSError:
                continue
            if stat.S_ISREG(facts.st_mode):
                held += min(info.size, facts.st_blocks * 512)
        return held


class FileSink:
    """Receiver storage: temporary files, written in place, renamed once verified.

    Names are relative paths (checked by ``safe_path``); the directories on the way are made
    one at a time and never followed through a link, so nothing lands outside the target.
    Temporary names are random and created exclusively without following links, so a file or
    symlink planted in the directory is never opened; space is allocated up front, so the
    traffic cannot make the disk fill faster than the announced size.
    """

    def __init__(
        self,
        directory: Path,
        files: list[FileInfo],
        *,
        overwrite: bool = False,
        resume: bool = False,
        sync: bool = False,
        preserve: bool = False,
        trust: str = "",
    ) -> None:
        self.directory = directory
        self.files = files
        self.trust = trust
        self._held: dict[int, tuple[bytearray, int]] = {}  # the last checkpoint's, per file
        # The receiver's word only: a sender's sync keeps identical files, replaces nothing.
        self.overwrite = overwrite
        self.resume = resume
        self.preserve = preserve
        self.paths: list[Path] = []
        self.temps: list[Path | None] = []  # None: a directory, or a file kept as it is
        self.handles: list[int] = []  # -1 where there is no temporary file
        self.made: list[Path] = []  # directories this transfer created
        # Partials of earlier transfers taken over, and (sync) files already in place:
        # file index -> (sha256, block size, blocks held; None: the whole file, in place).
        self.found: dict[int, tuple[str, int, bytearray | None]] = {}
        # Blocks that arrive in order are hashed as they are written; only what came out of
        # order (after a loss) is read back at the end.
        self._digests = [hashlib.sha256() for _ in files]
        self._hashed = [0 for _ in files]
        self.mismatched: list[int] = []  # files whose sha256 did not match at finish
        try:
            for info in files:
                self._open_one(info, sync)
        except BaseException:
            self.discard()
            raise

    def _open_one(self, info: FileInfo, sync: bool) -> None:
        parts = safe_path(info.name)
        parent = _make_dirs(self.directory, parts[:-1], self.made)
        final = parent / parts[-1]
        self.paths.append(final)
        index = len(self.handles)
        if info.is_dir:
            _make_dirs(parent, parts[-1:], self.made)
            self.handles.append(-1)
            self.temps.append(None)
            return
        if final.is_symlink() or (final.exists() and not final.is_file()):
            raise FileExistsError(errno.EEXIST, "exists and is not a regular file", str(final))
        if not self.overwrite and final.exists():
            same = sync and final.stat().st_size == info.size
            digest = sha256_of(final) if same else ""
            if not same or (not info.digest_pending and digest != info.sha256):
                raise FileExistsError(errno.EEXIST, _KEPT, str(final))
            self.found[index] = (digest, 0, None)  # the same, or the end will tell
        elif sync and final.exists() and final.stat().st_size == info.size:
            self.found[index] = (sha256_of(final), 0, None)
        taken = index in self.found  # already here: a partial of it is not opened (nor held)
        partial = (
            find_partial(parent, parts[-1], info, self.trust) if self.resume and not taken else None
        )
        if partial is not None:
            self.found[index] = (partial.sha256, partial.block_size, partial.held)
            self.handles.append(partial.fd)
            self.temps.append(partial.path)
            return
        temp = parent / part_name(parts[-1])
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temp, flags, 0o644)  # the final file's mode (less the umask)
        claim(fd)  # ours while we run: no other receiver's clean-up takes it
        self.handles.append(fd)
        self.temps.append(temp)
        _allocate(fd, info.size)

    def write(self, file_index: int, offset: int, data: Buffer) -> None:
        """Write one block (OSError on a full disk)."""
        self.write_run(file_index, offset, [memoryview(data)])

    def resumable(self) -> dict[int, tuple[str, int, bytearray | None]]:
        """Partials taken over, and files in place (sync): see ``found``."""
        return self.found

    def up_to_date(self, file_index: int) -> None:
        """Keep the file in place; its temporary file goes."""
        self._drop_temp(file_index)

    def _drop_temp(self, index: int) -> None:
        temp = self.temps[index]
        if self.handles[index] >= 0:
            with contextlib.suppress(OSError):
                os.close(self.handles[index])
            self.handles[index] = -1
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink()
            self.temps[index] = None

    def checkpoint(self, bitmaps: list[bytearray], block_size: int) -> None:
        """Record the blocks on disk (resume only; files whose sha256 is not known yet, or
        with nothing on disk, are not worth a record)."""
        if not self.resume:
            return
        for index, info in enumerate(self.files):
            temp = self.temps[index]
            if temp is not None and not info.digest_pending and 1 in bitmaps[index]:
                save_state(
                    temp.parent, temp_name_of(info), temp, info, block_size, bitmaps[index],
                    self.trust,
                )  # fmt: skip
                self._held[index] = (bitmaps[index], block_size)

    def keep(self) -> None:
        """Stop, keeping each partial file that has a record for a later transfer; the
        others are removed."""
        for index, info in enumerate(self.files):
            temp = self.temps[index]
            if temp is not None and self.handles[index] >= 0:
                if index in self._held:  # kept: it holds the space of what arrived, no more
                    _release_unheld(self.handles[index], info.size, *self._held[index])
                with contextlib.suppress(OSError):
                    os.close(self.handles[index])
                self.handles[index] = -1
                if not (self.resume and _points_to(temp.parent, temp_name_of(info), temp)):
                    with contextlib.suppress(OSError):
                        temp.unlink()

    def write_run(self, file_index: int, offset: int, blocks: list[memoryview]) -> None:
        """Write consecutive blocks in one call (OSError on a full disk)."""
        fd = self.handles[file_index]
        total = sum(len(b) for b in blocks)
        done = os.pwritev(fd, blocks, offset)
        if done < total:  # a short write (a signal, a full disk): the rest one by one
            _write_rest(fd, blocks, offset, done)
        if offset == self._hashed[file_index]:
            digest = self._digests[file_index]
            for block in blocks:
                digest.update(block)
            self._hashed[file_index] += total

    def finish(self) -> str | None:
        """Verify every file and rename it into place; the reason when one fails (the
        files whose sha256 did not match are then in ``mismatched``)."""
        self.mismatched = []
        for index, info in enumerate(self.files):
            fd = self.handles[index]
            if fd < 0:
                continue  # a directory, or a file already in place
            os.fsync(fd)
            digest = self._digests[index]
            offset = self._hashed[index]
            while offset < info.size:
                chunk = os.pread(fd, 1 << 20, offset)
                if not chunk:
                    break
                digest.update(chunk)
                offset += len(chunk)
            if digest.hexdigest() != info.sha256:
                self.mismatched.append(index)
        if self.mismatched:  # the receiver decides: receive them again, or discard
            return f"sha256 mismatch for {self.files[self.mismatched[0]].name}"
        self._forget_states(done=True)  # verified: nothing left to resume
        for index, info in enumerate(self.files):
            temp = self.temps[index]
            if temp is None:
                continue
            os.close(self.handles[index])
            self.handles[index] = -1
            if self.preserve:
                _apply(temp, info)
            if self.overwrite:
                os.replace(temp, self.paths[index])
                self.temps[index] = None
                continue
            try:
                # A hard link never replaces: a file that appeared meanwhile is kept.
                os.link(temp, self.paths[index])
            except FileExistsError:
                self.discard()
                return f"{self.paths[index]}: {_KEPT}"
            os.unlink(temp)
            self.temps[index] = None
        if self.preserve:  # directories last, deepest first: making files changes mtimes
            for index in sorted(
                (i for i, f in enumerate(self.files) if f.is_dir),
                key=lambda i: -len(self.files[i].name.split("/")),
            ):
                _apply(self.paths[index], self.files[index])
        return None

    def rewind(self, indices: list[int]) -> None:
        """Receive these files again from the start (their blocks are written anew)."""
        for index in indices:
            self._digests[index] = hashlib.sha256()
            self._hashed[index] = 0

    def discard(self) -> None:
        """Remove the temporary files (nothing wrong is left behind)."""
        self._forget_states()
        for index in range(len(self.handles)):
            self._drop_temp(index)
        for path in reversed(self.made):  # the directories we made, if nothing else is there
            with contextlib.suppress(OSError):
                path.rmdir()
        self.made = []

    def _forget_states(self, done: bool = False) -> None:
        """Remove our records; ``done``: every file is complete, so a partial of an older
        transfer kept for any of them (one a file in place made us pass by) goes too."""
        for index, info in enumerate(self.files[: len(self.temps)]):
            temp = self.temps[index]
            if temp is not None and _points_to(temp.parent, temp_name_of(info), temp):
                remove_state(temp.parent, temp_name_of(info))
            elif done and not info.is_dir:
                forget_partial(self.paths[index].parent, temp_name_of(info))


def _expire_where(directory: Path, files: list[FileInfo], max_bytes: int) -> None:
    """Expire old partials where this transfer's files go (the directories that exist and
    are reached without a link): a week-old partial never resumed is space given back."""
    now = time.time()
    places = {tuple(safe_path(f.name)[:-1]) for f in files if not f.is_dir}
    for parts in places:
        path = directory
        for part in parts:
            path = path / part
            if path.is_symlink() or not path.is_dir():
                break
        else:
            expire_partials(path, now, max_bytes=max_bytes)


_PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_libc: Any = None


def _release_unheld(fd: int, size: int, held: bytearray, block_size: int) -> None:
    """Give back the space of the blocks not received (allocated up front): a kept partial
    of a transfer that stopped early (or an announce sized to the free disk) holds only
    what really arrived. Best effort: where the kernel cannot punch holes, nothing changes."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    if not _libc or not hasattr(_libc, "fallocate"):
        return
    start = held.find(0)
    while start >= 0:
        end = held.find(1, start)
        end = len(held) if end < 0 else end
        offset, length = start * block_size, min(size, end * block_size) - start * block_size
        if length > 0 and _libc.fallocate(fd, _PUNCH, ctypes.c_long(offset), ctypes.c_long(length)):
            return  # not supported here (or failed): keep what is allocated
        start = held.find(0, end)


def temp_name_of(info: FileInfo) -> str:
    """The last component of a file's path: what its partial and record are named after."""
    return safe_path(info.name)[-1]


def _points_to(directory: Path, name: str, temp: Path) -> bool:
    """Whether the state kept for ``name`` records ``temp`` (ours, not another run's)."""
    return recorded_part(directory, name) == temp.name


def _make_dirs(directory: Path, parts: list[str], made: list[Path]) -> Path:
    """``directory/parts...``, each made when missing (and added to ``made``); a link or a
    file on the way is an error (OSError), never followed."""
    path = directory
    for part in parts:
        path = path / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
            made.append(path)
        if path.is_symlink() or not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory (or a link)", str(path))
    return path


def sha256_of(path: Path, *, follow: bool = False) -> str:
    """A file's sha256, read in 1 MiB chunks (hashlib lets other threads run meanwhile);
    a link is followed only with ``follow``."""
    digest = hashlib.sha256()
    nofollow = 0 if follow else getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, os.O_RDONLY | nofollow)
    try:
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _apply(path: Path, info: FileInfo) -> None:
    """The announced mode (permission bits only: no set-id, no sticky) and mtime."""
    if info.mode is not None:
        os.chmod(path, info.mode & 0o777, follow_symlinks=False)
    if info.mtime is not None:
        os.utime(path, (info.mtime, info.mtime), follow_symlinks=False)


def _write_rest(fd: int, blocks: list[memoryview], offset: int, done: int) -> None:
    rest = b"".join(blocks)[done:]
    while rest:
        written = os.pwrite(fd, rest, offset + done)
        done, rest = done + written, rest[written:]


def _allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes (ENOSPC now, not mid-transfer); sparse where not supported."""
    if size and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    os.ftruncate(fd, size)


def free_space(directory: Path) -> int | None:
    """Bytes available to us in ``directory`` (None when the file system does not say)."""
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


class MemorySink:
    """Files held in memory, verified like files on disk."""

    def __init__(self, files: list[FileInfo]) -> None:
        self.files = files
        self.data = [bytearray(f.size) for f in files]
        self.finished: dict[str, bytes] = {}
        self.mismatched: list[int] = []

    def write(self, file_index: int, offset: int, data: Buffer) -> None:
        self.data[file_index][offset : offset + len(data)] = data

    def write_run(self, file_index: int, offset: int, blocks: list[memoryview]) -> None:
        for block in blocks:
            self.write(file_index, offset, block)
            offset += len(block)

    def finish(self) -> str | None:
        self.mismatched = [
            index
            for index, (info, data) in enumerate(zip(self.files, self.data, strict=True))
            if hashlib.sha256(data).hexdigest() != info.sha256
        ]
        if self.mismatched:
            return f"sha256 mismatch for {self.files[self.mismatched[0]].name}"
        self.finished = {f.name: bytes(d) for f, d in zip(self.files, self.data, strict=True)}
        return None

    def rewind(self, indices: list[int]) -> None:
        return None  # the blocks received again overwrite the bad ones

    def discard(self) -> None:
        self.data = []

    def resumable(self) -> dict[int, tuple[str, int, bytearray | None]]:
        return {}

    def up_to_date(self, file_index: int) -> None:
        return None

    def checkpoint(self, bitmaps: list[bytearray], block_size: int) -> None:
        return None

    def keep(self) -> None:
        self.data = []


class MemoryStorage:
    """Received files end up in ``files`` (name -> bytes) once verified."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._sinks: list[MemorySink] = []

    def open(self, files: list[FileInfo], *, sync: bool = False) -> MemorySink:
        sink = MemorySink(files)
        self._sinks.append(sink)
        return sink

    def collect(self) -> dict[str, bytes]:
        """Every file verified so far."""
        for sink in self._sinks:
            self.files.update(sink.finished)
        return self.files
