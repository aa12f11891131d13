"""The capability table: what the host can do, and what MCASTKIT_WITHOUT turns off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mcastkit.transport.platform import CAPS, NAMES, WITHOUT, capabilities


def test_linux_has_every_facility_and_other_systems_none() -> None:
    assert all(capabilities("linux", {}).to_dict().values())
    for platform in ("darwin", "win32", "freebsd14"):
        assert not any(capabilities(platform, {}).to_dict().values()), platform


def test_facilities_are_turned_off_by_name_or_all() -> None:
    some = capabilities("linux", {WITHOUT: "gso, netlink"})
    assert not some.gso and not some.netlink
    assert sum(some.to_dict().values()) == len(NAMES) - 2
    assert not any(capabilities("linux", {WITHOUT: "all"}).to_dict().values())


def test_a_misspelt_facility_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no facility gos; known: all, gso"):
        capabilities("linux", {WITHOUT: "gos"})
    # At import: said once on stderr, nothing turned off, no traceback.
    env = {**os.environ, WITHOUT: "gos"}
    code = "from mcastkit.transport.platform import CAPS; print(CAPS.gso)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "no facility gos" in done.stderr
    assert done.stdout.strip() == str(sys.platform.startswith("linux"))


def test_the_table_of_this_run_is_what_the_environment_says() -> None:
    assert capabilities() == CAPS
