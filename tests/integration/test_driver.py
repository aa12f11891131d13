"""The one blocking driver (transport/driver.py), on real loopback sockets."""

from __future__ import annotations

import itertools
import socket
import time

from mcastkit.transport.batch import BatchReceiver
from mcastkit.transport.driver import STOP, Driver


def _pair() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    return receiver, sender


def test_a_waiting_driver_sleeps_and_a_datagram_wakes_it_at_once() -> None:
    receiver, sender = _pair()
    got: list[tuple[bytes, float]] = []
    sent_at: list[float] = []

    def handle(buffer, spans, source, drops) -> None:  # type: ignore[no-untyped-def]
        got.extend((bytes(buffer[a:b]), time.monotonic()) for a, b in spans)

    started = time.monotonic()

    def turn(now: float) -> float | None:
        if now - started > 0.6 or len(got) >= 3:
            return STOP
        if not sent_at and now - started > 0.3:
            sent_at.append(time.monotonic())
            for n in range(3):
                sender.send(b"datagram %d" % n)
        return 0.2  # the loop would sleep this long if nothing arrived

    with Driver() as driver:
        driver.read_runs(BatchReceiver(receiver, gro=False), handle)
        driver.run(turn)
        turns = driver.turns
    assert [data for data, _ in got] == [b"datagram 0", b"datagram 1", b"datagram 2"]
    assert got[0][1] - sent_at[0] < 0.1  # woken by the datagram, not by the 0.2 s wait
    assert turns < 10  # ~0.3 s at 0.2 s a turn: it slept, it did not spin
    receiver.close()
    sender.close()


def test_a_turn_that_wants_to_run_soon_waits_no_longer_than_it_asked() -> None:
    receiver, sender = _pair()
    stamps: list[float] = []

    def turn(now: float) -> float | None:
        stamps.append(now)
        return STOP if len(stamps) == 20 else 0.005

    with Driver() as driver:
        driver.on_readable(receiver, lambda: receiver.recv(100))
        driver.run(turn)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.004  # it waited
    assert sorted(gaps)[len(gaps) // 2] < 0.05  # and woke when asked (epoll rounds to 1 ms)
    receiver.close()
    sender.close()


def test_a_long_wait_is_cut_so_stop_flags_are_seen() -> None:
    stamps: list[float] = []

    def turn(now: float) -> float | None:
        stamps.append(now)
        return STOP if len(stamps) == 3 else 3600.0

    with Driver() as driver:
        started = time.monotonic()
        driver.run(turn)
    assert time.monotonic() - started < 2.0  # two waits of at most MAX_WAIT (0.25 s)
