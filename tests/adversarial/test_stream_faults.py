"""Faults on real hosts (namespaces): a receiver's link goes down, a receiver is stopped.

The invariant, whatever happens: every reliable message published is either delivered or
covered by a loss report. Before, a 4.5 s link outage lost 11,092 of 20,000 messages without
a report, and a receiver stopped while the publisher finished never learnt of the tail.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from netlab import PYTHON, Host, Lab, wait_for_line

PEER = str(Path(__file__).with_name("stream_peer.py"))
COUNT = 20_000


def _covered(result: dict, published: int) -> set[int]:
    covered = set(result["delivered"])
    for first, last, _reason in result["losses"]:
        covered.update(range(first, (published if last is None else last) + 1))
    return covered


def _start(host: Host, *args: str) -> subprocess.Popen[str]:
    return host.start(PYTHON, PEER, *args)


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_link_outage_longer_than_failure_detection_is_repaired_or_reported(lab: Lab) -> None:
    publisher_host, receiver_host = lab.lan(2)
    receiver = _start(receiver_host, "subscribe", "40")
    wait_for_line(receiver.stdout, "subscribed")
    publisher = _start(publisher_host, "publish", str(COUNT), "4000")
    wait_for_line(publisher.stdout, "publishing")
    time.sleep(1.0)
    receiver_host.run("ip", "link", "set", "eth0", "down", check=True)
    time.sleep(4.5)  # failure detection (3 heartbeats of 0.3 s) fires long before this
    receiver_host.run("ip", "link", "set", "eth0", "up", check=True)
    _finish(publisher)
    result = _finish(receiver)
    assert _covered(result, COUNT) >= set(range(1, COUNT + 1))
    # It resumed where it was, so what the window still held was repaired, not skipped.
    assert len(result["delivered"]) > COUNT * 0.9, result["losses"]


def test_a_receiver_stopped_while_the_publisher_finished_learns_of_the_tail(lab: Lab) -> None:
    publisher_host, receiver_host = lab.lan(2)
    receiver = _start(receiver_host, "subscribe", "40")
    wait_for_line(receiver.stdout, "subscribed")
    # 8,000 x 1,200 bytes: far more than the stopped receiver's socket buffer holds, so the
    # kernel drops the tail, the heartbeats and the goodbye.
    publisher = _start(publisher_host, "publish", "8000", "8000", "1200")
    wait_for_line(publisher.stdout, "publishing")
    time.sleep(0.3)
    receiver.send_signal(signal.SIGSTOP)
    try:
        _finish(publisher)  # done, lingered, said goodbye: all while the receiver slept
    finally:
        receiver.send_signal(signal.SIGCONT)
    result = _finish(receiver)
    assert _covered(result, 8000) >= set(range(1, 8001)), result["losses"]
    assert result["losses"], "a receiver that slept through the tail must say so"
