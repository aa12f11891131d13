"""Hosts on one LAN segment (namespaces on a bridge): what multicast must and must not do."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
from netlab import PYTHON, Host, Lab, require_tool, wait_for_line

from mcastkit.transport.platform import CAPS

# What the POSIX path (MCASTKIT_WITHOUT, macOS, BSD, Windows) does not tell.
NEEDS_PKTINFO = pytest.mark.skipif(
    not CAPS.pktinfo, reason="reads each datagram's TTL and destination (IP_PKTINFO)"
)
NEEDS_IFFLAGS = pytest.mark.skipif(not CAPS.ifflags, reason="reads interface flags (SIOCGIFFLAGS)")

GROUP = "239.255.42.1"
PORT = "5400"


def _listen(host: Host, *args: str):
    proc = host.start_mcast("listen", *args, "--json")
    wait_for_line(proc.stderr, "listening on")
    return proc


def _records(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    datagrams = [line for line in lines if "summary" not in line]
    summary = next(line["summary"] for line in lines if "summary" in line)
    return datagrams, summary


def test_two_hosts_greet_and_answer_each_other(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    # No --iface: each host follows its default route out of eth0, as on a real LAN.
    first = h1.start_mcast("demo", "--expect", "1", "--duration", "15", "--json")
    wait_for_line(first.stderr, "demo on")
    time.sleep(1.0)  # h1's only hello is gone before h2 joins: the late-start handshake
    second = h2.start_mcast("demo", "--expect", "1", "--duration", "15", "--json")
    out1, err1 = first.communicate(timeout=30)
    out2, err2 = second.communicate(timeout=30)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    summary1 = json.loads(out1.splitlines()[-1])["summary"]
    summary2 = json.loads(out2.splitlines()[-1])["summary"]
    id1, id2 = summary1["nodes"][0]["id"], summary2["nodes"][0]["id"]
    assert id1 != id2
    assert summary1["interface"] == "eth0" and summary2["interface"] == "eth0"
    assert summary1["nodes"][0]["greeted_by"] == [id2]
    assert summary1["nodes"][0]["answered_by"] == [id2]
    assert summary2["nodes"][0]["greeted_by"] == [id1]
    assert summary2["nodes"][0]["answered_by"] == [id1]
    events1 = [json.loads(line)["event"] for line in out1.splitlines()[:-1]]
    assert any(e["kind"] == "answered" and e["source"].startswith("10.88.0.2:") for e in events1)


def test_host_that_did_not_join_receives_nothing(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    member = _listen(h2, f"{GROUP}:{PORT}", "--timeout", "4", "--count", "5")
    # h3 binds the same port on the wildcard address but never joins the group.
    bystander = h3.start(
        PYTHON,
        "-c",
        textwrap.dedent(
            f"""
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", {PORT}))
            s.settimeout(3)
            print("ready", file=sys.stderr, flush=True)
            try:
                data, src = s.recvfrom(2000)
                print("GOT", src)
            except socket.timeout:
                print("NOTHING")
            """
        ),
    )
    wait_for_line(bystander.stderr, "ready")
    sent = h1.mcast("send", f"{GROUP}:{PORT}", "hello", "--count", "5", "--interval", "0.05")
    assert sent.returncode == 0, sent.stderr
    out, err = member.communicate(timeout=20)
    datagrams, summary = _records(out)
    assert member.returncode == 0, err
    assert summary["datagrams"] == 5
    assert {d["source"] for d in datagrams} == {h1.ipv4}
    assert bystander.communicate(timeout=20)[0].strip() == "NOTHING"


def test_socket_joined_to_a_gets_nothing_sent_to_b_on_the_same_port(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    group_a, group_b = "239.255.42.10", "239.255.42.11"
    on_a = _listen(h2, f"{group_a}:{PORT}", "--timeout", "3")
    on_b = _listen(h2, f"{group_b}:{PORT}", "--timeout", "3", "--count", "4")
    # Control: a naive socket (wildcard bind, IP_MULTICAST_ALL left on) joined to A does get
    # B's traffic once B is joined on the host: this is what mcastkit's receiver avoids.
    naive = h2.start(
        PYTHON,
        "-c",
        textwrap.dedent(
            f"""
            import socket, struct, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", {PORT}))
            mreq = struct.pack("=4s4si", socket.inet_aton("{group_a}"), bytes(4), 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            s.settimeout(3)
            print("ready", file=sys.stderr, flush=True)
            try:
                data, src = s.recvfrom(2000)
                print("GOT", data.decode())
            except socket.timeout:
                print("NOTHING")
            """
        ),
    )
    wait_for_line(naive.stderr, "ready")
    sent = h1.mcast("send", f"{group_b}:{PORT}", "for-b", "--count", "4", "--interval", "0.05")
    assert sent.returncode == 0, sent.stderr
    out_a, _ = on_a.communicate(timeout=20)
    out_b, _ = on_b.communicate(timeout=20)
    assert on_a.returncode == 1, "the A receiver must see nothing"
    assert _records(out_a)[1]["datagrams"] == 0
    assert on_b.returncode == 0
    assert _records(out_b)[1]["datagrams"] == 4
    assert naive.communicate(timeout=20)[0].strip() == "GOT for-b"


@NEEDS_PKTINFO
def test_ttl_zero_stays_on_the_sending_host(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    local = _listen(h1, f"{GROUP}:{PORT}", "--timeout", "3")
    remote = _listen(h2, f"{GROUP}:{PORT}", "--timeout", "3")
    sent = h1.mcast("send", f"{GROUP}:{PORT}", "ttl0", "--ttl", "0", "--count", "3")
    assert sent.returncode == 0, sent.stderr
    local_out, _ = local.communicate(timeout=20)
    remote_out, _ = remote.communicate(timeout=20)
    assert _records(local_out)[1]["datagrams"] == 3
    assert remote.returncode == 1 and _records(remote_out)[1]["datagrams"] == 0
    # Control: TTL 1 does reach the other host.
    remote = _listen(h2, f"{GROUP}:{PORT}", "--timeout", "3", "--count", "1")
    assert h1.mcast("send", f"{GROUP}:{PORT}", "ttl1", "--ttl", "1").returncode == 0
    out, _ = remote.communicate(timeout=20)
    datagrams, _ = _records(out)
    assert remote.returncode == 0 and datagrams[0]["ttl"] == 1


def test_no_loop_keeps_datagrams_off_the_sending_host(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    local = _listen(h1, f"{GROUP}:{PORT}", "--timeout", "3")
    remote = _listen(h2, f"{GROUP}:{PORT}", "--timeout", "3", "--count", "2")
    sent = h1.mcast("send", f"{GROUP}:{PORT}", "away", "--no-loop", "--count", "2")
    assert sent.returncode == 0, sent.stderr
    assert local.communicate(timeout=20) and local.returncode == 1
    assert _records(remote.communicate(timeout=20)[0])[1]["datagrams"] == 2


def test_ssm_receiver_gets_only_its_chosen_source(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    ssm_group = "232.1.2.3"
    receiver = _listen(h3, f"{ssm_group}:{PORT}", "--source", h1.ipv4, "--timeout", "3")
    for host in (h1, h2):
        sent = host.mcast("send", f"{ssm_group}:{PORT}", host.name, "--count", "5")
        assert sent.returncode == 0, sent.stderr
    out, err = receiver.communicate(timeout=20)
    datagrams, summary = _records(out)
    assert summary["datagrams"] == 5, err
    assert {d["source"] for d in datagrams} == {h1.ipv4}
    assert {d["text"] for d in datagrams} == {h1.name}


def test_exclude_mode_blocks_one_sender(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    receiver = _listen(h3, f"{GROUP}:{PORT}", "--exclude", h2.ipv4, "--timeout", "3")
    for host in (h1, h2):
        assert host.mcast("send", f"{GROUP}:{PORT}", host.name, "--count", "3").returncode == 0
    datagrams, summary = _records(receiver.communicate(timeout=20)[0])
    assert summary["datagrams"] == 3
    assert {d["source"] for d in datagrams} == {h1.ipv4}


@NEEDS_PKTINFO
def test_ipv6_link_scoped_group_between_hosts(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    group = f"[ff12::4242]:{PORT}%eth0"
    receiver = _listen(h2, group, "--timeout", "4", "--count", "3")
    sent = h1.mcast("send", group, "over-ipv6", "--count", "3", "--interval", "0.05")
    assert sent.returncode == 0, sent.stderr
    out, err = receiver.communicate(timeout=20)
    datagrams, summary = _records(out)
    assert receiver.returncode == 0, err
    assert summary["datagrams"] == 3
    assert all(d["source"].startswith("fe80::") for d in datagrams)
    assert {d["destination"] for d in datagrams} == {"ff12::4242"}
    assert {d["ttl"] for d in datagrams} == {1}


def test_ipv6_site_scoped_group_from_global_address(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    receiver = _listen(
        h2, f"[ff15::4242]:{PORT}", "--iface", "eth0", "--timeout", "4", "--count", "2"
    )
    sent = h1.mcast(
        "send",
        f"[ff15::4242]:{PORT}",
        "site",
        "--iface",
        "eth0",
        "--count",
        "2",
        "--source",
        h1.ipv6,
    )
    assert sent.returncode == 0, sent.stderr
    datagrams, _ = _records(receiver.communicate(timeout=20)[0])
    assert [d["source"] for d in datagrams] == [h1.ipv6, h1.ipv6]


@NEEDS_PKTINFO
def test_broadcast_reaches_every_host_on_the_segment(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    receivers = [
        _listen(
            h,
            f"255.255.255.255:{PORT}",
            "--broadcast",
            "--iface",
            "eth0",
            "--timeout",
            "3",
            "--count",
            "2",
        )
        for h in (h2, h3)
    ]
    sent = h1.mcast(
        "send", f"10.88.0.255:{PORT}", "to-all", "--broadcast", "--iface", "eth0", "--count", "2",
        "--ttl", "3",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "ttl 3" in sent.stderr
    for receiver in receivers:
        datagrams, _ = _records(receiver.communicate(timeout=20)[0])
        assert [d["source"] for d in datagrams] == [h1.ipv4, h1.ipv4]
        assert {d["destination"] for d in datagrams} == {"10.88.0.255"}
        # What it says is what it sends (issue 25, item 10: it said ttl 1 and sent 64).
        assert {d["ttl"] for d in datagrams} == {3}


def test_socat_sends_to_mcast_listen_and_receives_from_mcast_send(lab: Lab) -> None:
    require_tool("socat")
    h1, h2 = lab.lan(2)
    receiver = _listen(h2, f"{GROUP}:{PORT}", "--timeout", "5", "--count", "1")
    socat_send = h1.run(
        "sh",
        "-c",
        f"echo from-socat | socat -u STDIN UDP4-DATAGRAM:{GROUP}:{PORT},ip-multicast-if={h1.ipv4}",
    )
    assert socat_send.returncode == 0, socat_send.stderr
    datagrams, _ = _records(receiver.communicate(timeout=20)[0])
    assert datagrams[0]["text"] == "from-socat\n"
    assert datagrams[0]["source"] == h1.ipv4

    socat_recv = h2.start(
        "timeout",
        "5",
        "socat",
        "-u",
        f"UDP4-RECV:{PORT},ip-add-membership={GROUP}:eth0,reuseaddr",
        "STDOUT",
    )
    # socat prints nothing when ready: send a few spaced datagrams so one lands after the join.
    sent = h1.mcast("send", f"{GROUP}:{PORT}", "from-mcast", "--count", "10", "--interval", "0.2")
    assert sent.returncode == 0
    out, _ = socat_recv.communicate(timeout=20)
    assert "from-mcast" in out


def test_mcast_listen_counts_iperf2_multicast_datagrams(lab: Lab) -> None:
    require_tool("iperf")
    h1, h2 = lab.lan(2)
    receiver = _listen(h2, f"{GROUP}:{PORT}", "--timeout", "5", "--quiet")
    iperf = h1.run(
        "iperf",
        "-c",
        GROUP,
        "-u",
        "-p",
        PORT,
        "-T",
        "1",
        "-t",
        "1",
        "-b",
        "800K",
        "-l",
        "1000",
        "-B",
        h1.ipv4,
        timeout=20,
    )
    assert iperf.returncode == 0, iperf.stderr
    _, summary = _records(receiver.communicate(timeout=20)[0])
    # 800 kbit/s of 1000-byte datagrams for one second is about 100 datagrams.
    assert 80 <= summary["datagrams"] <= 120, summary
    assert list(summary["sources"]) and all(s.startswith(h1.ipv4) for s in summary["sources"])


@NEEDS_IFFLAGS
def test_interface_without_multicast_flag_is_a_clear_error(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("ip", "link", "set", "eth0", "multicast", "off", check=True)
    result = h1.mcast("listen", f"{GROUP}:{PORT}", "--iface", "eth0", "--timeout", "1")
    assert result.returncode == 2
    assert "no MULTICAST flag" in result.stderr
    assert "ip link set eth0 multicast on" in result.stderr


@NEEDS_IFFLAGS
def test_interface_that_is_down_is_a_clear_error(lab: Lab) -> None:
    (h1,) = lab.lan(1)
    h1.run("ip", "link", "set", "eth0", "down", check=True)
    result = h1.mcast("send", f"{GROUP}:{PORT}", "x", "--iface", "eth0")
    assert result.returncode == 2
    assert "ip link set eth0 up" in result.stderr
