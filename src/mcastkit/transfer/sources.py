"""What a sender reads: the files and trees to send, their digests, their blocks."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

from .protocol import EMPTY_SHA256, PENDING_DIGEST, FileInfo, check_tree
from .storage import sha256_of

__all__ = ["FileHasher", "FileSource", "describe_files", "hash_files", "list_files"]


def list_files(paths: list[Path]) -> tuple[list[FileInfo], list[Path | None], list[str]]:
    """The entries to send: files by their names, directories as trees (the directory's
    own name first, then every file and directory in it, by relative ``/`` paths), each
    with mode and mtime and its digest still to come (``PENDING_DIGEST``). Also each
    entry's path on disk (None for a directory) and what was skipped: symbolic links inside
    a tree are never followed (one named in ``paths`` is), and sockets, pipes and devices
    are not files."""
    infos: list[FileInfo] = []
    sources: list[Path | None] = []
    skipped: list[str] = []

    def add(path: Path, name: str, *, follow: bool = False) -> None:
        facts = path.stat() if follow else path.lstat()
        if stat.S_ISLNK(facts.st_mode) or not (
            stat.S_ISREG(facts.st_mode) or stat.S_ISDIR(facts.st_mode)
        ):
            skipped.append(name)
            return
        is_dir = stat.S_ISDIR(facts.st_mode)
        size = 0 if is_dir else facts.st_size
        digest = EMPTY_SHA256 if is_dir else PENDING_DIGEST
        mode = stat.S_IMODE(facts.st_mode)
        infos.append(FileInfo(name, size, digest, mode, facts.st_mtime, is_dir))
        sources.append(None if is_dir else path)

    for path in paths:
        if not (path.is_file() or path.is_dir()):
            raise FileNotFoundError(errno.ENOENT, "not a readable file or directory", str(path))
        base = path.name or path.resolve().name
        add(path, base, follow=True)  # a link named on the command line is followed
        if not path.is_dir():
            continue
        for root, dirs, names in os.walk(path):  # never into a linked directory
            dirs.sort()
            relative = Path(root).relative_to(path).parts
            for name in sorted(dirs) + sorted(names):
                add(Path(root) / name, "/".join((base, *relative, name)))
    check_tree(infos)  # ValueError: a name receivers would refuse, or one twice
    return infos, sources, skipped


def hash_files(paths: list[Path | None]) -> list[str]:
    """The sha256 of each file (a link named on the command line is followed); a directory
    (None) has the sha256 of nothing."""
    return [EMPTY_SHA256 if path is None else sha256_of(path, follow=True) for path in paths]


def describe_files(paths: list[Path]) -> list[FileInfo]:
    """Every entry ``paths`` name (files, trees), with its sha256."""
    infos, sources, _ = list_files(paths)
    return [
        info.with_digest(digest) for info, digest in zip(infos, hash_files(sources), strict=True)
    ]


class FileHasher(threading.Thread):
    """Hashes the files while the transfer starts: registration and the first pass need
    only names and sizes, and hashing 256 MiB takes longer than registering."""

    def __init__(self, paths: list[Path | None]) -> None:
        super().__init__(name="mcastkit-hash", daemon=True)
        self.paths = paths
        self.digests: list[str] | None = None
        self.error: OSError | None = None
        self.start()

    def run(self) -> None:
        try:
            self.digests = hash_files(self.paths)
        except OSError as exc:
            self.error = exc


class FileSource:
    """The files being sent, open for reading by offset."""

    def __init__(self, paths: list[Path | None]) -> None:
        self.fds: list[int] = []
        try:
            for path in paths:
                self.fds.append(-1 if path is None else os.open(path, os.O_RDONLY))
        except BaseException:
            self.close()
            raise

    def read(self, file_index: int, offset: int, size: int) -> bytes:
        return os.pread(self.fds[file_index], size, offset)

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
