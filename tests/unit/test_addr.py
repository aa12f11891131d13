"""Address parsing and classification against the RFC tables."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address

import pytest

from mcastkit import AddressError, classify, groups_sharing_mac, mac_for_group, parse_group


@pytest.mark.parametrize(
    ("text", "group", "port", "iface"),
    [
        ("239.1.2.3:5000", "239.1.2.3", 5000, None),
        ("239.1.2.3:5000%eth0", "239.1.2.3", 5000, "eth0"),
        ("[ff15::1]:5000", "ff15::1", 5000, None),
        ("[ff15::1]:5000%eth0", "ff15::1", 5000, "eth0"),
        ("[ff02::1%eth1]:6000", "ff02::1", 6000, "eth1"),
        ("  224.0.0.251:5353 ", "224.0.0.251", 5353, None),
    ],
)
def test_parse_group_forms(text: str, group: str, port: int, iface: str | None) -> None:
    spec = parse_group(text)
    assert (str(spec.group), spec.port, spec.iface) == (group, port, iface)


def test_default_port_and_bare_ipv6() -> None:
    assert parse_group("ff02::1%lo", default_port=9).port == 9
    assert parse_group("239.0.0.1", default_port=7).port == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty group"),
        ("10.0.0.1:5000", "10.0.0.1 is a unicast address"),
        ("0.0.0.0:5000", "unspecified"),
        ("255.255.255.255:5000", "--broadcast"),
        ("fe80::1:5000", "is a unicast address"),
        ("ff15::1:5000", "no port given"),
        ("999.1.1.1:5", "not an IPv4 or IPv6"),
        ("[fe80::1]:5000", "unicast"),
        ("239.1.2.3", "no port given"),
        ("239.1.2.3:0", "out of range"),
        ("239.1.2.3:70000", "out of range"),
        ("239.1.2.3:http", "not a number"),
        ("[ff15::1:5000", "missing ']'"),
        ("[ff15::1]5000", "expected ':PORT'"),
        ("239.1.2.3:5000%", "empty interface"),
        ("example.com:5000", "host names are not accepted"),
        ("[ff02::1%a]:1%b", "two different interfaces"),
    ],
)
def test_bad_specs_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=re.escape(message)):
        parse_group(text)


def test_broadcast_only_when_allowed() -> None:
    spec = parse_group("255.255.255.255:9", allow_broadcast=True)
    assert spec.broadcast
    assert parse_group("10.0.0.255:9", allow_broadcast=True).broadcast
    assert not parse_group("239.1.1.1:9", allow_broadcast=True).broadcast


@pytest.mark.parametrize(
    ("address", "scope", "routable", "ssm", "block_start"),
    [
        ("224.0.0.1", "link-local", False, False, "224.0.0.0/24"),
        ("224.0.0.251", "link-local", False, False, "224.0.0.0/24"),
        ("224.0.1.1", "global", True, False, "224.0.1.0/24"),
        ("232.1.1.1", "global", True, True, "232.0.0.0/8"),
        ("233.252.0.1", "global", True, False, "globally scoped"),
        ("233.1.2.3", "global", True, False, "233.0.0.0/8 GLOP"),
        ("234.1.1.1", "global", True, False, "234.0.0.0/8"),
        ("239.255.0.1", "admin-local", True, False, "239.255.0.0/16"),
        ("239.192.0.1", "organization-local", True, False, "239.192.0.0/14"),
        ("239.1.0.1", "admin", True, False, "239.0.0.0/8"),
        ("225.1.1.1", "global", True, False, "globally scoped"),
        ("ff01::1", "interface-local", False, False, "ff0x"),
        ("ff02::1", "link-local", False, False, "ff0x"),
        ("ff05::1:3", "site-local", True, False, "ff0x"),
        ("ff18::1", "organization-local", True, False, "ff1x"),
        ("ff1e::1", "global", True, False, "ff1x"),
        ("ff3e::8000:1", "global", True, True, "ff3x::/32"),
        ("ff3e:40:2001:db8::1", "global", True, False, "ff3x::/12 unicast-prefix"),
        ("ff7e:140:2001:db8::1", "global", True, False, "ff7x"),
    ],
)
def test_classify(address: str, scope: str, routable: bool, ssm: bool, block_start: str) -> None:
    info = classify(address)
    assert info.scope == scope
    assert info.routable is routable
    assert info.ssm is ssm
    assert info.block.startswith(block_start)


def test_well_known_and_glop_notes() -> None:
    assert classify("224.0.0.251").well_known == "mDNS"
    assert classify("ff02::fb").well_known == "mDNS"
    assert any("AS 258" in n for n in classify("233.1.2.3").notes)
    assert any("solicited-node" in n for n in classify("ff02::1:ff00:1234").notes)


@pytest.mark.parametrize(
    ("group", "mac"),
    [
        ("224.0.0.1", "01:00:5e:00:00:01"),
        ("239.255.255.250", "01:00:5e:7f:ff:fa"),
        ("224.128.0.1", "01:00:5e:00:00:01"),  # the lost bit: same MAC as 224.0.0.1
        ("ff02::1", "33:33:00:00:00:01"),
        ("ff02::1:ff12:3456", "33:33:ff:12:34:56"),
    ],
)
def test_mac_mapping(group: str, mac: str) -> None:
    assert mac_for_group(group) == mac


def test_groups_sharing_mac_are_the_31_others() -> None:
    shared = groups_sharing_mac("239.1.2.3")
    assert len(shared) == 31 == len(set(shared))
    assert IPv4Address("224.1.2.3") in shared and IPv4Address("239.129.2.3") in shared
    assert IPv4Address("239.1.2.3") not in shared
    assert groups_sharing_mac(IPv6Address("ff02::1")) == []
