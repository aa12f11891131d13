"""mcast top on a namespace LAN: a host that sends nothing and joins nothing sees the link's
groups, their rates, the loss a bridge inflicts (from the bench sequence numbers), joins and
leaves as they happen, and the querier of a snooping bridge."""

from __future__ import annotations

import json
import time
from typing import Any

from netlab import Lab, require_tool, sh, wait_for_line

GROUP = "239.77.9.1:6190"


def _views(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def _row(view: dict[str, Any], group: str) -> dict[str, Any] | None:
    return next((row for row in view["groups"] if row["group"] == group), None)


def test_top_sees_rates_loss_and_memberships_it_took_no_part_in(lab: Lab) -> None:
    require_tool("nft")
    sender, member, watcher = lab.lan(3)
    table = f"{lab.tag}top"
    sh("nft", "add", "table", "bridge", table)
    lab.tables.append(table)
    sh("nft", "add", "chain", "bridge", table, "c", "{ type filter hook forward priority 0; }")
    # 10 % of what the sender puts on the wire never reaches the watcher's port.
    sh("nft", f"add rule bridge {table} c oifname {lab.port(3)} ip daddr 239.77.9.1 "
       "numgen random mod 100 < 10 counter drop")  # fmt: skip
    top = watcher.start_mcast("top", "eth0", "--json", "--interval", "1", "--duration", "6")
    time.sleep(0.8)
    listener = member.start_mcast("listen", GROUP, "--iface", "eth0", "--quiet", "--timeout", "3")
    wait_for_line(listener.stderr, "listening on")
    sent = sender.mcast(
        "bench", "send", GROUP, "--rate", "2000pps", "--size", "400", "--duration", "2", "--json"
    )
    assert sent.returncode == 0, sent.stderr
    packets = json.loads(sent.stdout.splitlines()[-1])["summary"]["packets"]
    listener.communicate(timeout=20)
    out, err = top.communicate(timeout=30)
    assert top.returncode == 0, err
    views = _views(out)
    assert len(views) >= 5 and all(v["interface"] == "eth0" for v in views)
    last = _row(views[-1], GROUP)
    assert last is not None, views[-1]
    assert last["kind"] == "bench" and last["sources"][0].startswith(f"{sender.ipv4}:")
    dropped = lab.multicast_dropped()
    assert last["packets"] == packets - dropped  # every datagram that crossed, counted
    assert 0.05 < last["loss"] < 0.15, last  # estimated from the sequence numbers
    busiest = max((_row(v, GROUP) or {}).get("pps") or 0 for v in views)
    assert 1400 < busiest < 2200, busiest  # 2,000 pps offered, 10 % dropped
    events = [e for v in views for e in v["events"] if e.get("group") == "239.77.9.1"]
    assert [(e["event"], e["host"]) for e in events] == [
        ("join", member.ipv4),
        ("leave", member.ipv4),
    ], events
    assert sum(v["capture_drops"] for v in views[-1:]) == 0


def test_top_names_the_querier_of_a_snooping_bridge(lab: Lab) -> None:
    (watcher, _other) = lab.lan(2)
    lab.snooping_querier()
    done = watcher.mcast("top", "eth0", "--json", "--count", "3", "--interval", "1")
    assert done.returncode == 0, done.stderr
    last = _views(done.stdout)[-1]
    assert last["queriers"]["ipv4"]["protocol"].startswith("IGMPv"), last
    events = [e["event"] for v in _views(done.stdout) for e in v["events"]]
    assert events.count("querier") >= 1


def test_top_as_a_person_reads_it_and_its_bad_input(lab: Lab) -> None:
    (watcher,) = lab.lan(1)
    shown = watcher.mcast("top", "eth0", "--count", "1", "--interval", "0.5")
    assert shown.returncode == 0, shown.stderr
    assert "mcast top eth0" in shown.stdout and "querier none heard" in shown.stdout
    missing = watcher.mcast("top", "eth9", "--count", "1")
    assert missing.returncode == 2 and "eth9" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
