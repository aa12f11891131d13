"""The suite must never reach a real interface: check that it runs in its own namespace."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import ISOLATED, NOT_ISOLATED, STARTING_NETNS


def test_suite_runs_in_a_private_network_namespace() -> None:
    if not ISOLATED:
        pytest.skip(f"not isolated: {NOT_ISOLATED}")
    assert os.readlink("/proc/self/ns/net") != STARTING_NETNS
    names = {name for _, name in socket.if_nameindex()}
    # Only lo, plus whatever bridge ports tests made (all named mk<pid>...).
    assert "lo" in names
    assert all(name == "lo" or name.startswith("mk") for name in names), names
