"""How a Node on several interfaces spreads what it sends: the group's datagrams out of every
interface that is up, a peer's out of the one that peer was heard on (a reply goes back the
way its request came), and the memory of where peers were heard stays bounded."""

from __future__ import annotations

from ipaddress import IPv4Interface
from typing import Any

from mcastkit.addr import parse_group
from mcastkit.node_paths import MAX_REMEMBERED, Path, Paths
from mcastkit.transport import Interface


def _interface(name: str, index: int) -> Interface:
    return Interface(
        name, index, (IPv4Interface(f"10.{index}.0.1/24"),), (), True, True, True, True, False, 1500
    )


def _paths(*names: str) -> Paths:
    paths = Paths(parse_group("239.1.2.3:5000"), ttl=1, loopback=False)
    fake: Any = None  # distribute() never touches the sockets: only the queues
    for index, name in enumerate(names, start=2):
        paths.by_name[name] = Path(_interface(name, index), fake, fake, fake)
    paths._changed()
    return paths


def _queued(paths: Paths) -> dict[str, list[bytes]]:
    return {name: [data for data, _ in path.unsent] for name, path in paths.by_name.items()}


def test_group_datagrams_leave_by_every_interface_and_replies_by_the_peers() -> None:
    paths = _paths("eth0", "eth1")
    paths.heard("10.3.0.7", "eth1")
    paths.distribute(
        [(b"hello", None), (b"answer", ("10.3.0.7", 4000)), (b"to-stranger", ("10.9.0.1", 1))]
    )
    assert _queued(paths) == {
        "eth0": [b"hello", b"to-stranger"],  # never heard: the first path (the kernel routes)
        "eth1": [b"hello", b"answer"],
    }
    assert paths.pending()


def test_a_down_interface_gets_nothing_and_its_peers_fall_back() -> None:
    paths = _paths("eth0", "eth1")
    paths.heard("10.3.0.7", "eth1")
    paths.by_name["eth1"].down = True
    paths.distribute([(b"hello", None), (b"answer", ("10.3.0.7", 4000))])
    assert _queued(paths) == {"eth0": [b"hello", b"answer"], "eth1": []}


def test_one_interface_takes_everything_on_the_fast_path() -> None:
    paths = _paths("eth0")
    assert paths.only is paths.first
    paths.distribute([(b"a", None), (b"b", ("10.0.0.9", 1))])
    assert _queued(paths) == {"eth0": [b"a", b"b"]}
    assert _paths("eth0", "eth1").only is None


def test_where_peers_were_heard_is_bounded() -> None:
    paths = _paths("eth0", "eth1")
    for number in range(MAX_REMEMBERED + 500):  # a flood of spoofed sources
        paths.heard(f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}", "eth1")
    assert len(paths.arrived) == MAX_REMEMBERED
    assert "10.0.0.0" not in paths.arrived  # the oldest went first
