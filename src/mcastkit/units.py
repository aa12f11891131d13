"""Units shared by the library and the command line: rates and sizes, parsed from text.

Every parser raises ValueError with a message that says what is accepted; the CLI's typed
options (cli/argtypes.py) wrap them, so a value is checked where it is parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Rate", "parse_rate", "parse_size"]

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]?)(pps|bps|b|bit|bits)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Rate:
    """A target rate, in packets or bits per second."""

    value: float
    per_packet: bool

    def packets_per_second(self, size: int) -> float:
        """The rate in packets/s for payloads of ``size`` bytes (UDP payload bits)."""
        return self.value if self.per_packet else self.value / (size * 8)


def parse_rate(text: str) -> Rate | None:
    """``100M`` / ``100Mbps`` (bits/s), ``50kpps`` (packets/s), ``1.5G``; ``max``: None."""
    if text.strip().lower() == "max":
        return None
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate {text!r} not understood; examples: 100M, 1.5G, 50kpps")
    number, scale, unit = match.groups()
    value = float(number) * _SCALE[scale.lower()]
    if value <= 0:
        raise ValueError(f"rate {text!r} must be positive")
    return Rate(value, per_packet=(unit or "").lower() == "pps")


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``65536``, ``64k``, ``64M``, ``64MiB``, ``1G``: bytes (binary units). ValueError else."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):
        raise ValueError(f"size {text!r} not understood; examples: 65536, 64k, 64M, 1G") from None
    if value <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return value
