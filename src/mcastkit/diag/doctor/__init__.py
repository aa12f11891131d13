"""``mcast doctor``: why multicast does not work on this host, and the command that fixes it.

``collect()`` reads the host (interfaces, routes, sysctls, /proc/net/igmp, the firewall
ruleset, container and VM hints) into a :class:`SystemView`; ``diagnose()`` turns a view into
findings with pure functions (unit-tested on crafted views); ``self_test()`` sends and receives
on the chosen interface for real. Linux only for the /proc and sysctl checks.
"""

from __future__ import annotations

from .checks import diagnose
from .collect import collect
from .model import Finding, SystemView, exit_code, report
from .selftest import self_test

__all__ = ["Finding", "SystemView", "collect", "diagnose", "exit_code", "report", "self_test"]
