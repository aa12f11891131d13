"""Wipe a secret from this process's command line, so `ps` stops showing it.

`ps` and /proc/PID/cmdline read the argument strings the kernel copied into the process at
exec (between ``arg_start`` and ``arg_end`` of /proc/self/stat); Python's ``sys.argv`` is a
copy, so changing it hides nothing. A process may write its own memory through
/proc/self/mem, which is what this does. Linux only; elsewhere nothing changes.
"""

from __future__ import annotations

import os

__all__ = ["hide_from_ps"]

_ARG_START = 45  # arg_start is field 48 of /proc/PID/stat; fields after "comm)" start at 3


def hide_from_ps(secret: str) -> bool:
    """Overwrite ``secret`` with x's wherever it is a whole argument (``--opt SECRET``) or
    an option's value (``--opt=SECRET``) on this process's command line. False when
    nothing could be hidden (not Linux, no such argument, /proc refused)."""
    needle = os.fsencode(secret)
    if not needle:
        return False
    try:
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[_ARG_START]), int(fields[_ARG_START + 1])
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            arguments = memory.read(end - start)
            hidden = False
            position = 0
            for argument in arguments.split(b"\0"):
                if argument == needle or argument.endswith(b"=" + needle):
                    memory.seek(start + position + len(argument) - len(needle))
                    memory.write(b"x" * len(needle))
                    hidden = True
                position += len(argument) + 1
    except (OSError, ValueError, IndexError):
        return False
    return hidden
