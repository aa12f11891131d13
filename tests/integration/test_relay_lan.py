"""`mcast relay` between sites: LANs joined by a router that routes unicast and no multicast."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from netlab import PYTHON, Host, Lab, nft_drop, the_message, wait_for_line

GROUP = "239.255.61.1:5610"


def _relay(host: Host, *others: Host, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    peers = [arg for other in others for arg in ("--peer", other.ipv4)]
    proc = host.start_mcast("relay", GROUP, *peers, "--duration", "90", "--json", *extra)
    wait_for_line(proc.stderr, "relaying")
    return proc


def _summary(proc: subprocess.Popen[str]) -> dict:
    proc.terminate()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err  # SIGTERM: the summary, then 128 + 15
    return json.loads(out.splitlines()[-1])["summary"]


def _listen(host: Host, count: int = 10_000, timeout: float = 6) -> subprocess.Popen[str]:
    proc = host.start_mcast("listen", GROUP, "--count", str(count), "--timeout", str(timeout),
                            "--quiet", "--json")  # fmt: skip
    wait_for_line(proc.stderr, "listening")
    return proc


def _heard(proc: subprocess.Popen[str]) -> int:
    out, _err = proc.communicate(timeout=30)
    return int(json.loads(out.splitlines()[-1])["summary"]["datagrams"])


def test_members_on_two_sites_request_publish_and_repair_through_relays(
    lab: Lab, tmp_path: Path
) -> None:
    (a_relay, a_member), (b_relay, b_member) = lab.sites(2, per_site=2)
    relays = [_relay(a_relay, b_relay), _relay(b_relay, a_relay)]
    server = a_member.start_mcast("serve", "who", "--reply", "site-a", "--name", "a",
                                  "--group", GROUP, "--timeout", "60")  # fmt: skip
    wait_for_line(server.stderr, "serving")
    try:
        asked = b_member.mcast("request", "who", "--json", "--wait", "3", "--group", GROUP)
        assert asked.returncode == 0, asked.stderr
        assert [r["payload"] for r in json.loads(asked.stdout)["replies"]] == ["site-a"]
        seen = b_member.mcast("peers", "--once", "--wait", "2", "--json", "--group", GROUP)
        assert [(p["name"], p["path"]) for p in json.loads(seen.stdout)["peers"]] == [
            ("a", "relay")
        ], seen.stdout
        sub = a_member.start_mcast("subscribe", "t", "--count", "101", "--timeout", "30",
                                   "--json", "--group", GROUP)  # fmt: skip
        wait_for_line(sub.stderr, "subscribed")
        lines = "".join(f"m{i}\n" for i in range(100))
        done = b_member.mcast_fed(lines, "publish", "t", "-", "--wait", "5", "--peers", "2",
                                  "--group", GROUP)  # fmt: skip
        assert done.returncode == 0, done.stderr
        payload = tmp_path / "big.bin"
        payload.write_bytes(os.urandom(4 << 20))
        big = b_member.mcast("publish", "t", "--reliable", "--file", str(payload), "--wait",
                             "5", "--peers", "2", "--group", GROUP, "--json",
                             timeout=60)  # fmt: skip
        assert big.returncode == 0, big.stderr
        out, err = sub.communicate(timeout=40)
        assert sub.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [r["text"] for r in lines[:100]] == [f"m{i}" for i in range(100)]
        assert lines[100]["size"] == json.loads(big.stdout)["bytes"]
    finally:
        server.terminate()
        server.communicate(timeout=20)
    a_stats, b_stats = (_summary(p) for p in relays)
    # Replies and acknowledgements of site A's member went back through both relays.
    assert a_stats["counters"].get("unicast-out", 0) > 0, a_stats
    assert b_stats["counters"].get("unicast-in", 0) > 0, b_stats
    for stats in (a_stats, b_stats):
        assert not any(k.startswith("dropped:") for k in stats["counters"]), stats


def test_a_triangle_of_relays_delivers_each_datagram_once_per_site(lab: Lab) -> None:
    sites = lab.sites(3, per_site=2)
    relays = [sites[i][0] for i in range(3)]
    # Each relay names only one other: they tell each other the rest (a full mesh).
    procs = [_relay(relays[i], relays[(i + 1) % 3]) for i in range(3)]
    time.sleep(2.5)
    listeners = [_listen(site[1]) for site in sites[1:]]
    local = _listen(relays[0])  # the sending site too: no echo comes back to it
    sent = sites[0][1].mcast("send", GROUP, "x", "--count", "300", "--interval", "0.002")
    assert sent.returncode == 0, sent.stderr
    heard = [_heard(p) for p in listeners]
    stats = [_summary(p) for p in procs]
    assert heard == [300, 300], stats
    assert _heard(local) == 300
    assert stats[0]["counters"]["forwarded"] == 600  # 300 to each of the two others
    assert [s["counters"].get("emitted", 0) for s in stats] == [0, 300, 300]
    assert all(len(s["relays"]) == 2 for s in stats)


def test_a_sealed_relay_link_refuses_a_relay_without_the_key(lab: Lab) -> None:
    (a,), (b,), (c,) = lab.sites(3)
    key = ("--passphrase", "relay secret")
    good = [_relay(a, b, extra=key), _relay(b, a, extra=key)]
    intruder = _relay(c, a, extra=("--passphrase", "wrong"))
    time.sleep(3)
    stats = [_summary(p) for p in good]
    assert all(len(s["relays"]) == 1 for s in stats), stats
    assert (
        stats[0]["counters"].get("dropped:forged", 0)
        + stats[0]["counters"].get("dropped:unknown-key", 0)
        > 0
    )
    _summary(intruder)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--peer", "host:0"), "port"),
        (("--rate", "10kpps"), "bits/s"),
        (("--port", "0"), "port"),
        (("--iface", "eth0,eth1"), "one interface"),
    ],
)
def test_relay_bad_input_exits_2_with_one_line(args: tuple[str, ...], needle: str) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "mcastkit", "relay", GROUP, *args, "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert needle in done.stderr and "Traceback" not in done.stderr


def test_demo_send_file_and_32_mib_under_loss_cross_relays(lab: Lab, tmp_path: Path) -> None:
    (a_relay, a1, _), (b_relay, b1, b2) = lab.sites(2, per_site=3)
    relays = [_relay(a_relay, b_relay), _relay(b_relay, a_relay)]
    demo = [h.start_mcast("demo", GROUP, "--expect", "2", "--duration", "20") for h in (a1, b1, b2)]
    for proc in demo:
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, (out, err)
        assert "greeted by 2, answered by 2" in out
    for host in (b1, b2):  # from here: 5 % of every datagram the far receivers get
        nft_drop(host, "meta l4proto udp numgen random mod 100 < 5 drop")
    payload = tmp_path / "big.bin"
    data = os.urandom(32 << 20)
    payload.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    subs = [
        h.start_mcast(
            "subscribe", "big", "--count", "1", "--timeout", "120", "--json", "--group", GROUP
        )
        for h in (b1, b2)
    ]
    for proc in subs:
        wait_for_line(proc.stderr, "subscribed")
    done = a1.mcast("publish", "big", "--reliable", "--file", str(payload), "--wait", "10",
                    "--peers", "2", "--json", "--group", GROUP, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["repairs_sent"] > 0
    for proc in subs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        record = the_message(out)
        assert record["size"] == 32 << 20 and record["sha256"] == digest
    small = tmp_path / "file.bin"
    small.write_bytes(data[: 8 << 20])
    receivers = []
    for host in (b1, b2):
        target = tmp_path / host.name
        proc = host.start_mcast("recv-file", "--dir", str(target), "--parents", "--name",
                                host.name, "--json", "--wait", "30", "--group", GROUP)  # fmt: skip
        wait_for_line(proc.stderr, "waiting for a transfer")
        receivers.append((proc, target))
    sent = a1.mcast("send-file", str(small), "--json", "--group", GROUP, "--receivers", "2",
                    "--wait", "5", timeout=120)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    for proc, target in receivers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert (target / "file.bin").read_bytes() == data[: 8 << 20]
    for stats in (_summary(p) for p in relays):
        assert not any(k.startswith("dropped:") for k in stats["counters"]), stats


def test_two_relays_on_one_site_never_loop(lab: Lab) -> None:
    (a1, a2, sender), (b, listener, _) = lab.sites(2, per_site=3)
    procs = [_relay(a1, b), _relay(a2, b), _relay(b, a1, a2)]
    time.sleep(2.5)  # hellos: each relay learns the others' site addresses
    far, near = _listen(listener), _listen(a1)
    sent = sender.mcast("send", GROUP, "x", "--count", "200", "--interval", "0.002")
    assert sent.returncode == 0, sent.stderr
    # A mistake bounded, not hidden: the far site hears each datagram twice (once per
    # relay of the near site), never more; the near site hears no echo at all.
    assert _heard(far) == 400
    assert _heard(near) == 200
    stats = [_summary(p) for p in procs]
    # Each near relay sent to the far one only: it knows the other is on its own site.
    assert [s["counters"]["forwarded"] for s in stats[:2]] == [200, 200], stats
