"""Interfaces and sockets: the only code that talks to the operating system's network stack."""

from .interfaces import (
    Interface,
    check_multicast_capable,
    default_interface,
    list_interfaces,
    resolve_interface,
    route_interface,
)
from .sockets import (
    GroupSocket,
    Packet,
    configure_sending,
    enable_packet_info,
    open_receiver,
    open_sender,
    set_unicast_ttl,
)

__all__ = [
    "GroupSocket",
    "Interface",
    "Packet",
    "check_multicast_capable",
    "configure_sending",
    "default_interface",
    "enable_packet_info",
    "list_interfaces",
    "open_receiver",
    "open_sender",
    "resolve_interface",
    "route_interface",
    "set_unicast_ttl",
]
