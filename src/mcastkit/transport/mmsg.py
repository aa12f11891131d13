"""``recvmmsg(2)`` through ctypes: many datagrams per system call where GRO does not apply.

Python's socket module has no ``recvmmsg``. Without it a receiver pays one system call and
its Python overhead per datagram, which caps it near 300k datagrams/s per core; with it, one
call returns up to ``slots`` datagrams, each in its own slot of one buffer, with its source
address and control messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct

from .interfaces import zoned
from .platform import CAPS

_MSG_DONTWAIT = 0x40
_CMSG_HEAD = struct.Struct("@Nii")  # cmsg_len, cmsg_level, cmsg_type (64-bit Linux layout)
_ALIGN = ctypes.sizeof(ctypes.c_size_t)
# struct mmsghdr read back in one go: msg_namelen, msg_controllen, msg_flags, msg_len.
_RESULT = struct.Struct("@8xI4x8x8x8xNi4xI4x")


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _load() -> ctypes._FuncPointer | None:
    if not CAPS.recvmmsg:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_Mmsghdr),
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    function.restype = ctypes.c_int
    return function


_RECVMMSG = _load()
NAME_SIZE = 128  # sockaddr_storage
CONTROL_SIZE = 128


def available() -> bool:
    """True when this system has ``recvmmsg``."""
    return _RECVMMSG is not None


class MultiReceive:
    """Fixed buffers for ``recvmmsg`` on one socket: ``slots`` datagrams of up to
    ``slot_size`` bytes per call."""

    def __init__(self, sock: socket.socket, *, slots: int = 32, slot_size: int = 1 << 16) -> None:
        if _RECVMMSG is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available")
        self.sock = sock
        self.slots = slots
        self.slot_size = slot_size
        self.buffer = bytearray(slots * slot_size)
        self.names = bytearray(slots * NAME_SIZE)
        self.controls = bytearray(slots * CONTROL_SIZE)
        self._data = (ctypes.c_char * len(self.buffer)).from_buffer(self.buffer)
        self._name_area = (ctypes.c_char * len(self.names)).from_buffer(self.names)
        self._control_area = (ctypes.c_char * len(self.controls)).from_buffer(self.controls)
        self._iovecs = (_Iovec * slots)()
        self._headers = (_Mmsghdr * slots)()
        data, names, controls = (
            ctypes.addressof(self._data),
            ctypes.addressof(self._name_area),
            ctypes.addressof(self._control_area),
        )
        for index in range(slots):
            self._iovecs[index].iov_base = data + index * slot_size
            self._iovecs[index].iov_len = slot_size
            header = self._headers[index].msg_hdr
            header.msg_name = names + index * NAME_SIZE
            header.msg_iov = ctypes.pointer(self._iovecs[index])
            header.msg_iovlen = 1
            header.msg_control = controls + index * CONTROL_SIZE
            header.msg_namelen = NAME_SIZE
            header.msg_controllen = CONTROL_SIZE
        # namelen and controllen are value-result: the kernel shrinks them per message. The
        # headers as set here are copied back over the used slots after each receive: one
        # copy, where setting the fields through ctypes took 0.3 µs a slot.
        self._header_bytes = memoryview(self._headers).cast("B")
        self._pristine = memoryview(bytes(self._header_bytes))
        self._slot_bytes = ctypes.sizeof(_Mmsghdr)
        self._last = 0

    def results(self, count: int) -> list[tuple[int, int, int, int]]:
        """(name length, control length, flags, datagram length) of the first ``count`` slots,
        read in one pass (a ctypes field access per value costs more than the datagram)."""
        raw = memoryview(self._headers).cast("B")[: count * _RESULT.size]
        return list(_RESULT.iter_unpack(raw))

    def receive(self) -> int:
        """Datagrams now in the slots (0 when none was queued)."""
        assert _RECVMMSG is not None
        count = int(_RECVMMSG(self.sock.fileno(), self._headers, self.slots, _MSG_DONTWAIT, None))
        if count < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        self._last = count
        return count

    def length(self, index: int) -> int:
        """Bytes of the datagram in slot ``index``."""
        return int(self._headers[index].msg_len)

    def flags(self, index: int) -> int:
        """The message flags (``MSG_TRUNC`` when a datagram did not fit its slot)."""
        return int(self._headers[index].msg_hdr.msg_flags)

    def raw_source(self, index: int) -> bytes:
        """The sender's sockaddr as bytes (to compare without decoding)."""
        base = index * NAME_SIZE
        return bytes(self.names[base : base + 28])

    def source(self, index: int) -> tuple[str, int]:
        """The sender's address and port."""
        base = index * NAME_SIZE
        family = int.from_bytes(self.names[base : base + 2], "little")
        port = int.from_bytes(self.names[base + 2 : base + 4], "big")
        if family == socket.AF_INET6:
            raw = bytes(self.names[base + 8 : base + 24])
            host = socket.inet_ntop(socket.AF_INET6, raw)
            scope = int.from_bytes(self.names[base + 24 : base + 28], "little")
            return zoned((host, port, 0, scope))  # a link-local sender keeps its zone
        return socket.inet_ntop(socket.AF_INET, bytes(self.names[base + 4 : base + 8])), port

    def control(self, index: int) -> list[tuple[int, int, bytes]]:
        """The control messages of slot ``index``, as ``socket.recvmsg`` gives them."""
        length = int(self._headers[index].msg_hdr.msg_controllen)
        base = index * CONTROL_SIZE
        area = self.controls
        out = []
        offset = 0
        while offset + _CMSG_HEAD.size <= length:
            size, level, kind = _CMSG_HEAD.unpack_from(area, base + offset)
            if size < _CMSG_HEAD.size or offset + size > length:
                break
            out.append(
                (level, kind, bytes(area[base + offset + _CMSG_HEAD.size : base + offset + size]))
            )
            offset += (size + _ALIGN - 1) & ~(_ALIGN - 1)
        return out

    def finish(self) -> None:
        """Ready the slots used by the last ``receive`` for the next one."""
        end = self._last * self._slot_bytes
        self._header_bytes[:end] = self._pristine[:end]
