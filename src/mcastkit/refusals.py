"""Refusals a user can fix, and the hint a waiting receiver gives at the first one. Reads a
session's ``dropped:*`` counters or a transfer guard's ``dropped``; no I/O, and light: the
commands that import it start without loading the ciphers."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["why_refused"]


def why_refused(dropped: Mapping[str, int]) -> str | None:
    """Why a receiver refused what it heard, naming the fix, from its drop counts by reason
    (those a user fixes: no key, another key, a sender without the key, a clock that is
    off); None when none."""
    if without := dropped.get("sealed-without-key", 0):
        return (
            f"heard {without} sealed datagram(s): the group is sealed; give its --key-file "
            "(or --passphrase-file)"
        )
    if wrong := dropped.get("unknown-key", 0) + dropped.get("forged", 0):
        return f"heard {wrong} datagram(s) sealed with another key (or forged): check --key-file"
    if plain := dropped.get("unsealed", 0):
        return f"heard {plain} unsealed datagram(s): the sender does not use the group key"
    if (stale := dropped.get("stale", 0)) >= 3:  # not a frame or two in flight at our start
        return (
            f"refused {stale} sealed frame(s) stamped outside --max-skew of our clock: a "
            "member's clock is off (check NTP on both hosts, or raise --max-skew), or they "
            "are replays"
        )
    return None
