"""Verified file distribution to many receivers over multicast (announce, NAK repair, sha256)."""

from .runtime import describe_files, receive_files, send_files

__all__ = ["describe_files", "receive_files", "send_files"]
