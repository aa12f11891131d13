"""mcast ping between namespace hosts, with real packet loss from nftables."""

from __future__ import annotations

import json
import signal

from netlab import Host, Lab, nft_drop, wait_for_line

ARGS = ["--interval", "0.05", "--json"]


def _ping(host: Host, *args: str) -> tuple[int, dict]:
    done = host.mcast("ping", *ARGS, *args, timeout=60)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_three_hosts_find_each_other_without_a_host_list(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    others = [h.start_mcast("ping", *ARGS, "--count", "40") for h in (h2, h3)]
    code, summary = _ping(h1, "--count", "30")
    for proc in others:
        proc.communicate(timeout=30)
    assert code == 0, summary["problems"]
    peers = {p["address"].split(":")[0]: p for p in summary["peers"]}
    assert set(peers) == {h2.ipv4, h3.ipv4}
    for peer in peers.values():
        for path in ("multicast", "unicast"):
            stats = peer[path]
            assert stats["received"] >= 20
            assert stats["loss_since_first"] == 0.0
            assert stats["answered"] >= 20 and stats["rtt_ms"]["p50"] < 50
            assert stats["ttl_seen"] == 64 and stats["hops"] == 0


def test_multicast_blocked_but_unicast_works_exits_1(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    for host in (h1, h2):
        nft_drop(host, "ip daddr 224.0.0.0/4 drop")
    # Multicast never arrives, so the peer is found through --peer (unicast) only.
    other = h2.start_mcast("ping", *ARGS, "--count", "40")
    code, summary = _ping(h1, "--count", "30", "--peer", h2.ipv4)
    other.communicate(timeout=30)
    assert code == 1
    (peer,) = summary["peers"]
    assert peer["multicast"]["received"] == 0
    assert peer["unicast"]["received"] > 10 and peer["unicast"]["answered"] > 10
    assert "no multicast arrives" in summary["problems"][0]


def test_random_loss_is_measured_and_max_loss_fails(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    nft_drop(h1, "ip daddr 239.0.0.0/8 numgen random mod 100 < 20 drop")
    other = h2.start_mcast("ping", *ARGS, "--count", "220")
    code, summary = _ping(h1, "--count", "200", "--max-loss", "5")
    other.communicate(timeout=60)
    assert code == 1
    (peer,) = summary["peers"]
    assert 0.08 < peer["multicast"]["loss_since_first"] < 0.35  # 20 % dropped on h1's input
    assert peer["unicast"]["loss_since_first"] <= 0.02
    assert any("multicast loss" in p for p in summary["problems"])


def test_ctrl_c_prints_the_summary(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    other = h2.start_mcast("ping", "--interval", "0.05", "--duration", "6", "--json")
    pinger = h1.start_mcast("ping", "--interval", "0.05", "--json")
    wait_for_line(pinger.stderr, "probing every")
    import time

    time.sleep(1.5)
    pinger.send_signal(signal.SIGINT)
    out, _ = pinger.communicate(timeout=20)
    other.kill()
    other.wait()
    summary = json.loads(out)
    # The summary is printed, and the exit code says it was interrupted (the contract: 130).
    assert pinger.returncode == 130, summary["problems"]
    assert summary["ok"] and not summary["problems"]
    assert summary["peers"] and summary["peers"][0]["multicast"]["received"] > 5
