"""Shared by the benchmarks: run in a private network namespace, so nothing leaves the machine."""

from __future__ import annotations

import os
import shutil
import sys


def isolate() -> None:
    """As root, re-execute this script under ``unshare --net`` (once) with only ``lo`` up."""
    if os.environ.get("MCASTKIT_BENCH_NETNS") or os.geteuid() != 0 or not shutil.which("unshare"):
        return
    os.environ["MCASTKIT_BENCH_NETNS"] = "1"
    command = f"ip link set lo up && exec {sys.executable} {' '.join(map(repr, sys.argv))}"
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", command])
