"""mcastkit: UDP multicast toolkit — group sockets done right, addresses, diagnostics.

Names are imported on first use (PEP 562): ``import mcastkit`` stays cheap, and a command
that needs only file transfer never loads asyncio or the crypto library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .addr import GroupInfo, GroupSpec, classify, groups_sharing_mac, mac_for_group, parse_group
    from .aio import DEFAULT_GROUP, GatherResult, Node, Request, Subscription
    from .errors import AddressError, InterfaceError, MulticastError, SocketSetupError
    from .events import (
        AddressChanged,
        Failed,
        Gathered,
        IdRenewed,
        InterfaceDown,
        InterfaceEvent,
        InterfaceUp,
        Joined,
        Left,
        Message,
        RequestReceived,
        SlowReceiver,
        Unrecoverable,
        Updated,
    )
    from .framing import MessageTooLarge
    from .keyfiles import load_key_file, write_key_file
    from .peers import PeerInfo
    from .relaying import RelayOptions, run_relay
    from .reliable import ReliableConfig
    from .security import GroupKey, SecurityError, key_from_passphrase
    from .session import Session
    from .sync import SyncNode, connect
    from .transport import (
        GroupSocket,
        Interface,
        Packet,
        default_interface,
        list_interfaces,
        open_receiver,
        open_sender,
        open_senders,
        resolve_interface,
        resolve_interfaces,
    )

_HOMES = {
    "AddressChanged": "events",
    "AddressError": "errors",
    "DEFAULT_GROUP": "aio",
    "Failed": "events",
    "GatherResult": "aio",
    "Gathered": "events",
    "GroupInfo": "addr",
    "GroupKey": "security",
    "GroupSocket": "transport",
    "GroupSpec": "addr",
    "IdRenewed": "events",
    "Interface": "transport",
    "InterfaceDown": "events",
    "InterfaceError": "errors",
    "InterfaceEvent": "events",
    "InterfaceUp": "events",
    "Joined": "events",
    "Left": "events",
    "Message": "events",
    "MessageTooLarge": "framing",
    "MulticastError": "errors",
    "Node": "aio",
    "Packet": "transport",
    "PeerInfo": "peers",
    "RelayOptions": "relaying",
    "ReliableConfig": "reliable",
    "Request": "aio",
    "RequestReceived": "events",
    "SecurityError": "security",
    "Session": "session",
    "SlowReceiver": "events",
    "SocketSetupError": "errors",
    "Subscription": "aio",
    "SyncNode": "sync",
    "Unrecoverable": "events",
    "Updated": "events",
    "classify": "addr",
    "connect": "sync",
    "default_interface": "transport",
    "groups_sharing_mac": "addr",
    "key_from_passphrase": "security",
    "list_interfaces": "transport",
    "load_key_file": "keyfiles",
    "mac_for_group": "addr",
    "open_receiver": "transport",
    "open_sender": "transport",
    "open_senders": "transport",
    "parse_group": "addr",
    "resolve_interface": "transport",
    "resolve_interfaces": "transport",
    "run_relay": "relaying",
    "write_key_file": "keyfiles",
}

__all__ = [
    "DEFAULT_GROUP",
    "AddressChanged",
    "AddressError",
    "Failed",
    "GatherResult",
    "Gathered",
    "GroupInfo",
    "GroupKey",
    "GroupSocket",
    "GroupSpec",
    "IdRenewed",
    "Interface",
    "InterfaceDown",
    "InterfaceError",
    "InterfaceEvent",
    "InterfaceUp",
    "Joined",
    "Left",
    "Message",
    "MessageTooLarge",
    "MulticastError",
    "Node",
    "Packet",
    "PeerInfo",
    "RelayOptions",
    "ReliableConfig",
    "Request",
    "RequestReceived",
    "SecurityError",
    "Session",
    "SlowReceiver",
    "SocketSetupError",
    "Subscription",
    "SyncNode",
    "Unrecoverable",
    "Updated",
    "__version__",
    "classify",
    "connect",
    "default_interface",
    "groups_sharing_mac",
    "key_from_passphrase",
    "list_interfaces",
    "load_key_file",
    "mac_for_group",
    "open_receiver",
    "open_sender",
    "open_senders",
    "parse_group",
    "resolve_interface",
    "resolve_interfaces",
    "run_relay",
    "write_key_file",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mcastkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # found once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
