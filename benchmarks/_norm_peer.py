"""A NORM (RFC 5740) sender or receiver through Debian's libnorm, for bench_reliable.py.

    python _norm_peer.py send GROUP PORT IFACE COUNT SIZE SEED [RATE|cc]
    python _norm_peer.py recv GROUP PORT IFACE COUNT

The sender enqueues COUNT data objects of SIZE bytes (deterministic random, as the mcast peer
sends) at a fixed RATE in bits/s (default 400e6), or with NORM's congestion control ("cc"),
and waits until they are flushed. "lan:RATE" (or "lan:cc") adds NORM's settings for a fast
LAN: a 1 ms initial GRTT and no NACK back-off. The receiver
prints one JSON line: sha256 per object in order of completion, and the completion time.
libnorm runs its protocol in its own thread, in C; Python only moves the events.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import random
import sys
import time

NORM_TX_QUEUE_VACANCY = 1
NORM_TX_QUEUE_EMPTY = 2
NORM_TX_FLUSH_COMPLETED = 3
NORM_RX_OBJECT_COMPLETED = 20
NORM_RX_OBJECT_ABORTED = 21


class NormEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("session", ctypes.c_void_p),
        ("sender", ctypes.c_void_p),
        ("object", ctypes.c_void_p),
    ]


def _library() -> ctypes.CDLL:
    norm = ctypes.CDLL("libnorm.so.1")
    signatures = {
        "NormCreateInstance": ([ctypes.c_bool], ctypes.c_void_p),
        "NormCreateSession": (
            [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint16, ctypes.c_uint32],
            ctypes.c_void_p,
        ),
        "NormSetMulticastInterface": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_bool),
        "NormSetTTL": ([ctypes.c_void_p, ctypes.c_ubyte], ctypes.c_bool),
        "NormSetMulticastLoopback": ([ctypes.c_void_p, ctypes.c_bool], ctypes.c_bool),
        "NormSetCongestionControl": ([ctypes.c_void_p, ctypes.c_bool, ctypes.c_bool], None),
        "NormSetTxRateBounds": ([ctypes.c_void_p, ctypes.c_double, ctypes.c_double], None),
        "NormSetTxRate": ([ctypes.c_void_p, ctypes.c_double], None),
        "NormSetTxSocketBuffer": ([ctypes.c_void_p, ctypes.c_uint], ctypes.c_bool),
        "NormSetRxSocketBuffer": ([ctypes.c_void_p, ctypes.c_uint], ctypes.c_bool),
        "NormStartSender": (
            [
                ctypes.c_void_p,
                ctypes.c_uint16,
                ctypes.c_uint32,
                ctypes.c_uint16,
                ctypes.c_uint16,
                ctypes.c_uint16,
                ctypes.c_ubyte,
            ],
            ctypes.c_bool,
        ),
        "NormStartReceiver": ([ctypes.c_void_p, ctypes.c_uint32], ctypes.c_bool),
        "NormDataEnqueue": (
            [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint],
            ctypes.c_void_p,
        ),
        "NormGetNextEvent": (
            [ctypes.c_void_p, ctypes.POINTER(NormEvent), ctypes.c_bool],
            ctypes.c_bool,
        ),
        "NormDataAccessData": ([ctypes.c_void_p], ctypes.c_void_p),
        "NormObjectGetSize": ([ctypes.c_void_p], ctypes.c_int64),
        "NormSetTxCacheBounds": (
            [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint32],
            None,
        ),
        "NormSetRxCacheLimit": ([ctypes.c_void_p, ctypes.c_ushort], None),
        "NormSetGrttEstimate": ([ctypes.c_void_p, ctypes.c_double], None),
        "NormSetBackoffFactor": ([ctypes.c_void_p, ctypes.c_double], None),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(norm, name)
        function.argtypes, function.restype = arguments, result
    return norm


def _session(norm: ctypes.CDLL, group: str, port: int, iface: str, node_id: int) -> tuple:
    instance = norm.NormCreateInstance(False)
    session = norm.NormCreateSession(instance, group.encode(), port, node_id)
    norm.NormSetMulticastInterface(session, iface.encode())
    norm.NormSetTTL(session, 1)
    norm.NormSetMulticastLoopback(session, False)
    return instance, session


def send(group: str, port: int, iface: str, count: int, size: int, seed: int, rate: str) -> None:
    norm = _library()
    instance, session = _session(norm, group, port, iface, 1)
    if rate.startswith("lan:"):
        # NORM's settings for a fast LAN and a small group, as its developer guide and
        # examples give them: a low initial GRTT (the default is 0.25 s, 0.5 s in older
        # releases) and no receiver NACK back-off (the default factor is 4).
        rate = rate.removeprefix("lan:")
        norm.NormSetGrttEstimate(session, 0.001)
        norm.NormSetBackoffFactor(session, 0.0)
    if rate == "cc":
        norm.NormSetCongestionControl(session, True, True)  # TFMCC-like, NORM's adaptive mode
        norm.NormSetTxRateBounds(session, 1e6, 10e9)
    else:
        norm.NormSetTxRate(session, float(rate))
    norm.NormSetTxSocketBuffer(session, 4 << 20)
    norm.NormSetTxCacheBounds(session, 1 << 30, count, max(count, 16))
    norm.NormStartSender(session, 7, 256 << 20, 1400, 64, 0, 0)
    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for _ in range(count)]
    event = NormEvent()
    print(json.dumps({"started": time.time()}), flush=True)
    for payload in payloads:
        while not norm.NormDataEnqueue(session, payload, len(payload), None, 0):
            norm.NormGetNextEvent(instance, ctypes.byref(event), True)  # wait for vacancy
    while norm.NormGetNextEvent(instance, ctypes.byref(event), True):
        if event.type in (NORM_TX_FLUSH_COMPLETED, NORM_TX_QUEUE_EMPTY):
            break
    time.sleep(3600)  # keep serving repairs until the harness stops us


def recv(group: str, port: int, iface: str, count: int) -> None:
    norm = _library()
    instance, session = _session(norm, group, port, iface, 2 + random.randrange(1 << 20))
    norm.NormSetRxSocketBuffer(session, 16 << 20)
    norm.NormSetRxCacheLimit(session, 4096)
    norm.NormStartReceiver(session, 256 << 20)
    print("ready", file=sys.stderr, flush=True)
    digests: list[str] = []
    aborted = 0
    event = NormEvent()
    while len(digests) < count and norm.NormGetNextEvent(instance, ctypes.byref(event), True):
        if event.type == NORM_RX_OBJECT_COMPLETED:
            length = norm.NormObjectGetSize(event.object)
            data = ctypes.string_at(norm.NormDataAccessData(event.object), length)
            digests.append(hashlib.sha256(data).hexdigest())
        elif event.type == NORM_RX_OBJECT_ABORTED:
            aborted += 1
    print(json.dumps({"done": time.time(), "digests": digests, "aborted": aborted}), flush=True)


if __name__ == "__main__":
    role, group, port, iface, count = sys.argv[1:6]
    if role == "send":
        rate = sys.argv[8] if len(sys.argv) > 8 else "400e6"
        send(group, int(port), iface, int(count), int(sys.argv[6]), int(sys.argv[7]), rate)
    else:
        recv(group, int(port), iface, int(count))
