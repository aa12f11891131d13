"""What this host can do, read once: facts of the machine beneath the sockets."""

from __future__ import annotations

import functools


@functools.cache
def default_cipher() -> str:
    """AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305 (constant time
    without them)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return "aes-256-gcm" if "aes" in line.split() else "chacha20-poly1305"
    except OSError:
        pass
    return "chacha20-poly1305"
