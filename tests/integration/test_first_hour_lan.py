"""The first hour on a network (issue 25): what a new user meets on real links. A membership
report when a carrier returns (seen with tcpdump on the wire), ..."""

from __future__ import annotations

import subprocess
import time

import pytest
from netlab import Host, Lab, require_tool, sh, wait_for_line

REPORT_FILTERS = {
    # IGMP membership reports (v1 0x12, v2 0x16, v3 0x22), not queries or leaves; the IP
    # header carries the router alert option, so the IGMP type sits after ip[0]'s length
    4: "igmp and (ip[(ip[0] & 0xf) << 2] == 0x12 or ip[(ip[0] & 0xf) << 2] == 0x16"
    " or ip[(ip[0] & 0xf) << 2] == 0x22)",
    # MLD reports (v1 131, v2 143) after the hop-by-hop header (8 bytes), which the icmp6
    # primitive does not look past
    6: "ip6[6] == 0 and ip6[40] == 58 and (ip6[48] == 131 or ip6[48] == 143)",
}


def _capture_reports(host: Host, family: int) -> subprocess.Popen[str]:
    tcpdump = require_tool("tcpdump")
    capture = host.start(tcpdump, "-l", "-n", "-i", "eth0", REPORT_FILTERS[family])
    wait_for_line(capture.stderr, "listening on")
    return capture


@pytest.mark.parametrize(
    ("family", "group"), [(4, "239.77.5.1:6150"), (6, "[ff15::77:5]:6151")], ids=["igmp", "mld"]
)
@pytest.mark.parametrize("command", ["listen", "subscribe"])
def test_a_returning_carrier_sends_a_membership_report(
    lab: Lab, family: int, group: str, command: str
) -> None:
    (host,) = lab.lan(1)
    if command == "listen":
        member = host.start_mcast("listen", group, "--iface", "eth0", "--json", "--timeout", "20")
    else:
        member = host.start_mcast(
            "subscribe", "t", "--group", group, "--iface", "eth0", "--json", "--timeout", "20"
        )
    try:
        wait_for_line(member.stderr, "listening on" if command == "listen" else "subscribed")
        sh("ip", "link", "set", lab.port(1), "down")  # the cable is pulled at the switch
        if command == "listen":
            wait_for_line(member.stdout, '"interface-down"', timeout=8)
        time.sleep(3)  # the reports of the first join are long done
        capture = _capture_reports(host, family)
        sh("ip", "link", "set", lab.port(1), "up")
        if command == "listen":
            wait_for_line(member.stdout, '"interface-up"', timeout=8)
        # Before: "joined there", and not a report on the wire until the next query.
        report = wait_for_line(capture.stdout, "", timeout=8)
        assert report
        capture.kill()
    finally:
        member.kill()
