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
import errno
import hashlib
import os
from pathlib import Path

from .partial import find_partial, part_name, recorded_part, remove_state, save_state
from .protocol import Buffer, FileInfo, safe_name

__all__ = ["DirectoryStorage", "FileSink", "MemorySink", "MemoryStorage", "free_space"]

SPACE_MARGIN = 1 << 20  # free space kept beyond the announced size


class DirectoryStorage:
    """Files in ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.directory = directory
        self.overwrite = overwrite
        self.resume = resume

    def open(self, files: list[FileInfo]) -> FileSink:
        """A sink for the announced files; OSError when they cannot be written here."""
        total = sum(f.size for f in files)
        free = free_space(self.directory)
        if free is not None and total + SPACE_MARGIN > free:
            raise OSError(
                errno.ENOSPC,
                f"not enough space: {total:,} bytes announced, {free:,} free",
                str(self.directory),
            )
        return FileSink(self.directory, files, overwrite=self.overwrite, resume=self.resume)


class FileSink:
    """Receiver storage: temporary files, written in place, renamed once verified.

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
    ) -> None:
        self.directory = directory
        self.files = files
        self.overwrite = overwrite
        self.resume = resume
        # Partials of earlier transfers taken over: file index -> (sha256, block size, held).
        self.found: dict[int, tuple[str, int, bytearray]] = {}
        self.paths: list[Path] = []
        self.temps: list[Path] = []
        self.handles: list[int] = []
        # Blocks that arrive in order are hashed as they are written; only what came out of
        # order (after a loss) is read back at the end.
        self._digests = [hashlib.sha256() for _ in files]
        self._hashed = [0 for _ in files]
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            for info in files:
                name = safe_name(info.name)
                final = directory / name
                if not overwrite and (final.exists() or final.is_symlink()):
                    raise FileExistsError(
                        errno.EEXIST, "exists; give --overwrite to replace it", str(final)
                    )
                partial = find_partial(directory, name, info) if resume else None
                if partial is not None:
                    self.found[len(self.handles)] = (
                        partial.sha256,
                        partial.block_size,
                        partial.held,
                    )
                    self.handles.append(partial.fd)
                    self.temps.append(partial.path)
                    self.paths.append(final)
                    continue
                temp = directory / part_name(name)
                fd = os.open(temp, flags, 0o644)  # the final file's mode (less the umask)
                self.handles.append(fd)
                self.temps.append(temp)
                self.paths.append(final)
                _allocate(fd, info.size)
        except BaseException:
            self.discard()
            raise

    def write(self, file_index: int, offset: int, data: Buffer) -> None:
        """Write one block (OSError on a full disk)."""
        self.write_run(file_index, offset, [memoryview(data)])

    def resumable(self) -> dict[int, tuple[str, int, bytearray]]:
        """Partials taken over: file index -> (their sha256, block size, blocks held)."""
        return self.found

    def checkpoint(self, bitmaps: list[bytearray], block_size: int) -> None:
        """Record the blocks on disk (resume only; files whose sha256 is not known yet, or
        with nothing on disk, are not worth a record)."""
        if not self.resume or not self.handles:
            return
        for index, info in enumerate(self.files):
            if not info.digest_pending and 1 in bitmaps[index]:
                name = safe_name(info.name)
                save_state(
                    self.directory, name, self.temps[index], info, block_size, bitmaps[index]
                )

    def keep(self) -> None:
        """Stop, keeping each partial file that has a record for a later transfer; the
        others are removed."""
        for fd in self.handles:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.handles = []
        for index, info in enumerate(self.files):
            recorded = _points_to(self.directory, safe_name(info.name), self.temps[index])
            if not (self.resume and recorded):
                with contextlib.suppress(OSError):
                    self.temps[index].unlink()

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
        """Verify every file and rename it into place; the reason when one fails."""
        for index, info in enumerate(self.files):
            fd = self.handles[index]
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
                self.discard()
                return f"sha256 mismatch for {info.name}"
        for index in range(len(self.files)):
            os.close(self.handles[index])
        self.handles = []
        for index in range(len(self.files)):
            if self.overwrite:
                os.replace(self.temps[index], self.paths[index])
                continue
            try:
                # A hard link never replaces: a file that appeared meanwhile is kept.
                os.link(self.temps[index], self.paths[index])
            except FileExistsError:
                self.discard()
                return f"{self.paths[index]} appeared during the transfer; kept it (--overwrite)"
            os.unlink(self.temps[index])
        self._forget_states()
        return None

    def discard(self) -> None:
        """Remove the temporary files (nothing wrong is left behind)."""
        for fd in self.handles:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.handles = []
        for temp in self.temps:
            with contextlib.suppress(OSError):
                temp.unlink()
        self._forget_states()

    def _forget_states(self) -> None:
        for index, info in enumerate(self.files):
            if index < len(self.temps) and _points_to(
                self.directory, safe_name(info.name), self.temps[index]
            ):
                remove_state(self.directory, safe_name(info.name))


def _points_to(directory: Path, name: str, temp: Path) -> bool:
    """Whether the state kept for ``name`` records ``temp`` (ours, not another run's)."""
    return recorded_part(directory, name) == temp.name


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

    def write(self, file_index: int, offset: int, data: Buffer) -> None:
        self.data[file_index][offset : offset + len(data)] = data

    def write_run(self, file_index: int, offset: int, blocks: list[memoryview]) -> None:
        for block in blocks:
            self.write(file_index, offset, block)
            offset += len(block)

    def finish(self) -> str | None:
        for info, data in zip(self.files, self.data, strict=True):
            if hashlib.sha256(data).hexdigest() != info.sha256:
                self.discard()
                return f"sha256 mismatch for {info.name}"
        self.finished = {f.name: bytes(d) for f, d in zip(self.files, self.data, strict=True)}
        return None

    def discard(self) -> None:
        self.data = []

    def resumable(self) -> dict[int, tuple[str, int, bytearray]]:
        return {}

    def checkpoint(self, bitmaps: list[bytearray], block_size: int) -> None:
        return None

    def keep(self) -> None:
        self.data = []


class MemoryStorage:
    """Received files end up in ``files`` (name -> bytes) once verified."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._sinks: list[MemorySink] = []

    def open(self, files: list[FileInfo]) -> MemorySink:
        sink = MemorySink(files)
        self._sinks.append(sink)
        return sink

    def collect(self) -> dict[str, bytes]:
        """Every file verified so far."""
        for sink in self._sinks:
            self.files.update(sink.finished)
        return self.files
