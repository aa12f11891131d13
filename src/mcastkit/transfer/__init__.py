"""Verified file distribution to many receivers over multicast (announce, NAK repair, sha256)."""

from .receiver_host import ReceiveOptions, receive_files
from .sender_host import SendOptions, send_files
from .sources import describe_files

__all__ = ["ReceiveOptions", "SendOptions", "describe_files", "receive_files", "send_files"]
