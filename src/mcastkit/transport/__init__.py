"""Interfaces and sockets: the only code that talks to the operating system's network stack."""

from .interfaces import (
    IfaceChoice,
    Interface,
    check_multicast_capable,
    default_interface,
    eligible_for_all,
    interface_name,
    is_multi,
    list_interfaces,
    resolve_interface,
    resolve_interfaces,
    route_interface,
)
from .sockets import (
    GroupSocket,
    Packet,
    configure_sending,
    enable_packet_info,
    open_receiver,
    open_sender,
    open_senders,
    set_unicast_ttl,
)

__all__ = [
    "GroupSocket",
    "IfaceChoice",
    "Interface",
    "Packet",
    "check_multicast_capable",
    "configure_sending",
    "default_interface",
    "eligible_for_all",
    "enable_packet_info",
    "interface_name",
    "is_multi",
    "list_interfaces",
    "open_receiver",
    "open_sender",
    "open_senders",
    "resolve_interface",
    "resolve_interfaces",
    "route_interface",
    "set_unicast_ttl",
]
