"""Sender and receiver state machines for file distribution (see protocol.py), with no I/O:
``SendSession`` (sending.py) and ``ReceiveSession`` (receiving.py), gathered here.

Both take datagrams and the time, and return datagrams to send. File access goes through a
source (sender) or a storage that opens a sink (receiver; transfer/storage.py has files on
disk and in memory), so the engines never touch a file and their tests run on memory.
"""

from __future__ import annotations

from ..peers import Address
from .protocol import Out, safe_name, safe_path
from .receiving import DEFAULT_MAX_SIZE, SENDER_SILENCE, ReceiveSession
from .sending import BlockSource, ReceiverState, SendSession
from .sinks import Sink, Storage

__all__ = [
    "DEFAULT_MAX_SIZE",
    "SENDER_SILENCE",
    "Address",
    "BlockSource",
    "Out",
    "ReceiveSession",
    "ReceiverState",
    "SendSession",
    "Sink",
    "Storage",
    "safe_name",
    "safe_path",
]
