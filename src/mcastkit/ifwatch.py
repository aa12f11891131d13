"""Which of our interfaces changed: snapshots of the host's interfaces in, events out (no I/O).

A runtime feeds ``InterfaceTracker.update`` a fresh ``list_interfaces()`` whenever the kernel
reports a link or address change (debounced), and acts on the events: join on an interface
that came up, leave one that went down, re-announce from a new address.
"""

from __future__ import annotations

from collections.abc import Iterable

from .events import AddressChanged, InterfaceDown, InterfaceEvent, InterfaceUp
from .netif import ALL, Interface, eligible_for_all

__all__ = ["POLL_INTERFACES", "SETTLE", "InterfaceTracker"]

SETTLE = 0.25  # seconds of quiet after a link/address notice before the interfaces are read
POLL_INTERFACES = 2.0  # seconds between reads of the interfaces where netlink is missing


def _addresses(interface: Interface, family: int) -> tuple[str, ...]:
    found = interface.ipv4 if family == 4 else interface.ipv6
    return tuple(sorted(str(a.ip) for a in found))


class InterfaceTracker:
    """The interfaces in use for one group, and how a new snapshot differs from them.

    ``wanted`` is "all" (every interface ``eligible_for_all``) or the names given; a named
    interface counts while it is up with carrier (loopback too, when named).
    """

    def __init__(self, family: int, wanted: str | Iterable[str], current: Iterable[Interface]):
        self.family = family
        self.every = wanted == ALL
        self.names = frozenset() if isinstance(wanted, str) else frozenset(wanted)
        # Only what is usable counts as in use: loopback standing in for "all" until a real
        # interface comes, or a named one without carrier yet, comes up later.
        self.in_use: dict[str, Interface] = {i.name: i for i in current if self.usable(i)}

    @classmethod
    def for_choice(
        cls, family: int, chosen: object, current: Iterable[Interface]
    ) -> InterfaceTracker:
        """The tracker for what a user chose: "all" takes any interface that comes; any
        other choice keeps to the interfaces in ``current``, by name."""
        current = list(current)
        every = isinstance(chosen, str) and chosen.strip() == ALL
        return cls(family, ALL if every else [i.name for i in current], current)

    def usable(self, interface: Interface) -> bool:
        """True when the group should be joined on ``interface`` now."""
        if self.every:
            return eligible_for_all(interface, self.family)
        return (
            interface.name in self.names
            and interface.up is not False
            and interface.running is not False
            and (interface.multicast is not False or interface.loopback)
        )

    def update(self, snapshot: Iterable[Interface]) -> list[InterfaceEvent]:
        """Events that turn the interfaces in use into what ``snapshot`` allows; the tracker
        then holds the new state. A device recreated under its name is down, then up."""
        family = self.family
        usable = {i.name: i for i in snapshot if self.usable(i)}
        events: list[InterfaceEvent] = []
        for name, old in list(self.in_use.items()):
            new = usable.get(name)
            if new is None or new.index != old.index:
                del self.in_use[name]
                events.append(InterfaceDown(name, old.index, _addresses(old, family)))
                continue
            before, after = _addresses(old, family), _addresses(new, family)
            self.in_use[name] = new
            if before != after:
                added = tuple(a for a in after if a not in before)
                removed = tuple(a for a in before if a not in after)
                events.append(AddressChanged(name, new.index, after, added, removed))
        for name, new in usable.items():
            if name not in self.in_use:
                self.in_use[name] = new
                events.append(InterfaceUp(name, new.index, _addresses(new, family)))
        return events
