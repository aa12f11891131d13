"""mcastkit: UDP multicast toolkit — group sockets done right, addresses, diagnostics."""

from .addr import GroupInfo, GroupSpec, classify, groups_sharing_mac, mac_for_group, parse_group
from .errors import (
    AddressError,
    DecodeError,
    InterfaceError,
    MulticastError,
    SocketSetupError,
)
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

__version__ = "0.1.0"

__all__ = [
    "AddressError",
    "DecodeError",
    "GroupInfo",
    "GroupSocket",
    "GroupSpec",
    "Interface",
    "InterfaceError",
    "MulticastError",
    "Packet",
    "SocketSetupError",
    "__version__",
    "classify",
    "default_interface",
    "groups_sharing_mac",
    "list_interfaces",
    "mac_for_group",
    "open_receiver",
    "open_sender",
    "parse_group",
    "resolve_interface",
]
