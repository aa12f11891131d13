"""Reliable multicast messages side by side: mcast Node streams vs NORM (libnorm), same run.

A sender and N receivers (network namespaces on a bridge, inside a private namespace: the
script re-executes itself under ``unshare --net`` as root), optional random loss on the
receivers' input (nftables). Each workload is COUNT messages of SIZE bytes, the same bytes for
both tools; every receiver's sha256 list is checked. Throughput is payload bytes over the time
from the sender's first message to the last receiver's last message. Both tools run with their
adaptive rate (mcast's default). NORM runs twice: at a fixed 400 Mbit/s ("norm", its classic
NACK-only mode) and with its TFMCC-style congestion control ("norm-cc"); "norm-lan" and
"norm-lan-cc" are the same with NORM's settings for a fast LAN and a small group (a 1 ms initial
GRTT instead of 0.25-0.5 s, no NACK back-off), as its developer guide gives them, at 1 Gbit/s (where
it did best with them). NORM (RFC 5740, NRL's
libnorm, Debian package libnorm1) is C with its own thread; mcast is Python.

    python benchmarks/bench_reliable.py [--workloads 1x64M,4000x16K] [--receivers 1,3]
        [--loss 0,5,20] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import ctypes.util
import hashlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _isolation import isolate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
GROUP, PORT = "239.255.90.1", 6001
PEERS = {"mcast": HERE / "_mcast_peer.py", "norm": HERE / "_norm_peer.py"}
PEERS["norm-cc"] = PEERS["norm-lan"] = PEERS["norm-lan-cc"] = PEERS["norm"]
NORM_RATE = "400e6"  # bits/s for NORM's fixed-rate mode (its best of 100M/400M/1G by default)
NORM_LAN_RATE = "1e9"  # with the LAN settings: its best of 400M/1G/2G (34.7/70.9/53.7 MB/s)
TIMEOUT = 120.0


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def _digests(count: int, size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [hashlib.sha256(rng.randbytes(size)).hexdigest() for _ in range(count)]


def run_cell(tool: str, hosts: list, count: int, size: int, seed: int, norm_rate: str) -> dict:
    from netlab import wait_for_line

    sender, *receivers = hosts
    peer = [sys.executable, str(PEERS[tool])]
    procs = [h.start(*peer, "recv", GROUP, str(PORT), "eth0", str(count)) for h in receivers]
    for proc in procs:
        wait_for_line(proc.stderr, "ready", timeout=20)
    extra = {
        "norm": [norm_rate],
        "norm-cc": ["cc"],
        "norm-lan": [f"lan:{NORM_LAN_RATE}"],
        "norm-lan-cc": ["lan:cc"],
    }.get(tool, [str(len(receivers))])
    args = [str(PORT), "eth0", str(count), str(size), str(seed), *extra]
    sending = sender.start(*peer, "send", GROUP, *args)
    try:
        started = json.loads(wait_for_line(sending.stdout, "started", timeout=30))["started"]
        results = []
        deadline = time.monotonic() + TIMEOUT
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                results.append(json.loads(out) if out.strip() else None)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                results.append(None)
    finally:
        sending.kill()
        sending.communicate()
    expected = _digests(count, size, seed)
    done = [r for r in results if r is not None]
    complete = [r for r in done if sorted(r["digests"]) == sorted(expected)]
    in_order = [r for r in complete if r["digests"] == expected]
    finished = max((r["done"] for r in done), default=started + TIMEOUT)
    seconds = max(1e-6, finished - started) if len(complete) == len(receivers) else None
    return {
        "tool": tool,
        "correct": len(complete),
        "in_order": len(in_order),
        "aborted": sum(r.get("aborted", 0) for r in done),
        "seconds": None if seconds is None else round(seconds, 3),
        "mb_per_s": None if seconds is None else round(count * size / seconds / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="1x64M,4000x16K", help="COUNTxSIZE, comma list")
    parser.add_argument("--receivers", default="1,3")
    parser.add_argument("--loss", default="0,5,20", help="percent random loss on receivers")
    parser.add_argument("--tools", default="mcast,norm,norm-cc,norm-lan,norm-lan-cc")
    parser.add_argument("--norm-rate", default=NORM_RATE, help="NORM's fixed rate, bits/s")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median reported)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    isolate()
    from netlab import Lab, nft_drop

    have_norm = ctypes.util.find_library("norm") is not None
    tools = [t for t in args.tools.split(",") if not t.startswith("norm") or have_norm]
    if "norm" in args.tools and not have_norm:
        print("libnorm is missing: apt-get install libnorm1 (NORM column skipped)", file=sys.stderr)
    rows = []
    for workload in args.workloads.split(","):
        count_text, size_text = workload.split("x")
        count, size = int(count_text), _size(size_text)
        for receivers in (int(n) for n in args.receivers.split(",")):
            for loss in (int(p) for p in args.loss.split(",")):
                runs: dict[str, list[dict]] = {tool: [] for tool in tools}
                for attempt in range(args.repeat):
                    for tool in tools:  # interleaved: both tools see the same machine state
                        lab = Lab()
                        try:
                            hosts = lab.lan(receivers + 1)
                            for host in hosts[1:]:
                                if loss:
                                    rule = (
                                        f"ip daddr 224.0.0.0/4 numgen random mod 100 < {loss} drop"
                                    )
                                    nft_drop(host, rule)
                            runs[tool].append(
                                run_cell(tool, hosts, count, size, attempt + 1, args.norm_rate)
                            )
                        finally:
                            lab.close()
                for tool, results in runs.items():
                    speeds = [r["mb_per_s"] for r in results if r["mb_per_s"] is not None]
                    row = {
                        "workload": workload,
                        "receivers": receivers,
                        "loss": loss,
                        "tool": tool,
                        "runs": results,
                        "median_mb_per_s": round(statistics.median(speeds), 1) if speeds else None,
                        "correct_runs": sum(r["correct"] == receivers for r in results),
                    }
                    rows.append(row)
                    if not args.json:
                        median = row["median_mb_per_s"]
                        shown = "failed" if median is None else f"{median:7.1f} MB/s"
                        print(
                            f"{workload:<9} {receivers} rcv {loss:>2}% loss  {tool:<11} {shown}  "
                            f"correct {row['correct_runs']}/{len(results)} runs  "
                            f"each {[r['mb_per_s'] for r in results]}",
                            flush=True,
                        )
                cell = [r for r in rows[-len(runs) :] if r["median_mb_per_s"] is not None]
                norms = [
                    r for r in cell if r["tool"] != "mcast" and r["correct_runs"] == args.repeat
                ]
                ours = [r for r in cell if r["tool"] == "mcast"]
                if norms and ours and not args.json:
                    best = max(norms, key=lambda r: r["median_mb_per_s"])
                    ratio = ours[0]["median_mb_per_s"] / best["median_mb_per_s"]
                    print(
                        f"{'':<33}mcast / best NORM ({best['tool']}, all runs correct): {ratio:.1f}"
                    )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
