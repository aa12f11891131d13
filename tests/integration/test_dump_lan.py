"""mcast dump on namespace hosts: decoding, pcap files read by tshark, full disk."""

from __future__ import annotations

import json

from netlab import Host, Lab, require_tool, wait_for_line

GROUP = "239.255.77.78:5078"


def _dump(host: Host, *args: str):
    proc = host.start_mcast("dump", *args, "--timeout", "4")
    wait_for_line(proc.stderr, "dumping")
    return proc


def test_dump_decodes_sealed_frames_with_and_without_the_key(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    with_key = _dump(h2, GROUP, "--json", "--passphrase", "pw", "--count", "3")
    without_key = _dump(h2, GROUP, "--json", "--count", "3")
    sent = h1.mcast("publish", "news", "hello", "--passphrase", "pw", "--wait", "0.3")
    assert sent.returncode == 0, sent.stderr
    opened = [json.loads(line) for line in with_key.communicate(timeout=20)[0].splitlines()]
    closed = [json.loads(line) for line in without_key.communicate(timeout=20)[0].splitlines()]
    kinds = [r["decoded"].get("type") for r in opened[:-1]]
    assert "HELLO" in kinds and "DATA" in kinds
    data = next(r for r in opened if r.get("decoded", {}).get("type") == "DATA")
    assert data["decoded"]["topic"] == "news" and data["source"] == h1.ipv4
    assert all(r["decoded"]["encrypted"] and "type" not in r["decoded"] for r in closed[:-1])
    summary = opened[-1]["summary"]
    assert summary["sources"] and all(k.startswith(h1.ipv4) for k in summary["sources"])


def test_pcap_is_read_by_tshark_ipv4_and_ipv6(lab: Lab, tmp_path) -> None:
    tshark = require_tool("tshark")
    h1, h2 = lab.lan(2)
    for group, expect_src in ((f"{GROUP}", h1.ipv4), ("[ff12::99]:5078%eth0", "fe80::")):
        capture = tmp_path / f"cap{len(expect_src)}.pcap"
        proc = _dump(h2, group, "--pcap", str(capture), "--count", "3")
        assert h1.mcast("send", group, "payload!", "--count", "3", "--ttl", "4").returncode == 0
        proc.communicate(timeout=20)
        assert proc.returncode == 0
        fields = ["ip.src", "ip.ttl"] if "." in expect_src else ["ipv6.src", "ipv6.hlim"]
        read = h2.run(
            tshark,
            "-r",
            str(capture),
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            *(arg for f in fields for arg in ("-e", f)),
            "-e",
            "udp.dstport",
            "-e",
            "data.len",
            "-e",
            "_ws.expert",
            timeout=60,
        )
        assert read.returncode == 0, read.stderr
        rows = [line.split("\t") for line in read.stdout.splitlines()]
        assert len(rows) == 3
        for row in rows:
            assert row[0].startswith(expect_src)
            assert row[1] == "4" and row[2] == "5078" and row[3] == "8"
            assert len(row) < 5 or "checksum" not in row[4].lower()  # no bad-checksum expert


def test_full_disk_is_reported_and_the_dump_goes_on(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    proc = _dump(h2, GROUP, "--pcap", "/dev/full", "--count", "2")
    assert h1.mcast("send", GROUP, "x", "--count", "2").returncode == 0
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out.count("\n") == 2  # both datagrams still shown
    assert "No space left on device" in err
