"""mcastkit: UDP multicast toolkit — group sockets done right, addresses, diagnostics."""

from .addr import GroupInfo, GroupSpec, classify, groups_sharing_mac, mac_for_group, parse_group
from .aio import DEFAULT_GROUP, GatherResult, Node, Request, Subscription
from .errors import (
    AddressError,
    InterfaceError,
    MulticastError,
    SocketSetupError,
)
from .reliable import ReliableConfig, SlowReceiver, Unrecoverable
from .security import GroupKey, SecurityError, key_from_passphrase, load_key_file, write_key_file
from .session import (
    Failed,
    Gathered,
    IdRenewed,
    Joined,
    Left,
    Message,
    MessageTooLarge,
    PeerInfo,
    RequestReceived,
    Session,
    Updated,
)
from .sync import SyncNode, connect
from .transport import (
    GroupSocket,
    Interface,
    Packet,
    default_interface,
    list_interfaces,
    open_receiver,
    open_sender,
    resolve_interface,
)
from .version import __version__

__all__ = [
    "DEFAULT_GROUP",
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
    "InterfaceError",
    "Joined",
    "Left",
    "Message",
    "MessageTooLarge",
    "MulticastError",
    "Node",
    "Packet",
    "PeerInfo",
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
    "parse_group",
    "resolve_interface",
    "write_key_file",
]
