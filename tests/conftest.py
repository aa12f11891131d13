"""Suite-wide set-up: isolate the network first, then offer test hosts.

As root on Linux the whole test process moves into a fresh network namespace before any test
module opens a socket: its only interface is ``lo``, and every test host it builds is a
namespace of its own. Nothing the tests send can leave through a real interface. Without root,
namespace tests skip with a reason and the rest pin every socket to loopback.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

CLONE_NEWNET = 0x40000000


def _isolate_network() -> str | None:
    """Enter a private network namespace; return why not when that cannot be done."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return None


STARTING_NETNS = os.readlink("/proc/self/ns/net") if os.path.exists("/proc/self/ns/net") else ""
NOT_ISOLATED = _isolate_network()
ISOLATED = NOT_ISOLATED is None


def pytest_report_header() -> str:
    if ISOLATED:
        return "network: private namespace (only lo; test hosts are namespaces of their own)"
    return f"network: NOT isolated ({NOT_ISOLATED}); namespace tests skip, sockets stay on lo"


@pytest.fixture
def lab() -> Iterator[object]:
    """A fresh LAN of test hosts; removed after the test."""
    if not ISOLATED:
        pytest.skip(f"test hosts need root network namespaces ({NOT_ISOLATED})")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    from netlab import Lab

    made = Lab()
    try:
        yield made
    finally:
        made.close()
