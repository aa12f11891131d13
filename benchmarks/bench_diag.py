"""Diagnostics side by side with the reference tools, on one namespace host pair, same run.

1. Throughput, 64 B and 1400 B datagrams, unpaced senders for a few seconds each:
   - iperf2 client -> iperf2 server (the reference),
   - mcast bench send -> mcast bench recv,
   - iperf2 client -> mcast bench recv (interop, same receiver for both senders).
   Reported: sender pps (ratio to iperf2's) and loss at the receiver.
2. RTT: ``mcast ping`` (multicast path) vs a minimal Python ping/pong over raw sockets on the
   same group, same interval: median and p99, as ratios.

Two hosts (network namespaces joined by a veth pair through a bridge) are built inside a
private network namespace (the script re-executes itself under ``unshare --net`` as root), so
nothing leaves the machine.

    python benchmarks/bench_diag.py [--seconds 3] [--pings 500] [--repeat 3] [--json]

Throughput runs are interleaved (iperf2, mcast, interop; again ...) and the median run of each
is reported: single runs on a 2-core machine move by 10 % either way.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import sys
import textwrap
import time
from pathlib import Path

from _isolation import isolate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

GROUP, PORT = "239.255.92.1", 5920


def _mcast(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcastkit", *args]


def _iperf_client(h1, size: int, seconds: float) -> int:
    """Run iperf2's unpaced multicast client from h1; return the datagrams it sent."""
    done = h1.run(
        "iperf",
        "-c",
        GROUP,
        "-p",
        str(PORT),
        "-u",
        "-b",
        "10G",
        "-l",
        str(size),
        "-t",
        str(seconds),
        "-T",
        "1",
        "-B",
        h1.ipv4,
        timeout=seconds + 30,
    )
    return int(re.search(r"Sent (\d+) datagrams", done.stdout).group(1))


def iperf_pair(h1, h2, size: int, seconds: float) -> dict[str, float]:
    server = h2.start("iperf", "-s", "-u", "-B", GROUP, "-p", str(PORT), "-e")
    time.sleep(0.5)
    sent = _iperf_client(h1, size, seconds)
    time.sleep(1.0)
    server.send_signal(signal.SIGINT)
    out, _ = server.communicate(timeout=10)
    lost, total = map(int, re.findall(r"(-?\d+)/\s*(\d+)\s+\(", out)[-1])
    return {
        "sent": sent,
        "pps": sent / seconds,
        "received": total - lost,
        "loss": lost / total if total else 1.0,
    }


def mcast_pair(h1, h2, size: int, seconds: float, sender: str) -> dict[str, float]:
    receiver = h2.start(*_mcast("bench", "recv", f"{GROUP}:{PORT}", "--json", "--idle", "1.5"))
    time.sleep(0.7)
    if sender == "mcast":
        done = h1.run(
            *_mcast(
                "bench",
                "send",
                f"{GROUP}:{PORT}",
                "--rate",
                "max",
                "--size",
                str(size),
                "--duration",
                str(seconds),
                "--json",
            ),
            timeout=seconds + 30,
        )
        sent = json.loads(done.stdout.splitlines()[-1])["summary"]["packets"]
    else:
        sent = _iperf_client(h1, size, seconds)
    out, _ = receiver.communicate(timeout=seconds + 30)
    summary = json.loads(out.splitlines()[-1])["summary"]
    received = summary["packets"]
    return {
        "sent": sent,
        "pps": sent / seconds,
        "received": received,
        "loss": max(0.0, 1 - received / sent) if sent else 1.0,
        "kernel_drops": summary["kernel_drops"],
    }


RAW_PONG = textwrap.dedent("""
    import socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{group}", {port}))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton("{group}") + socket.inet_aton("{me}"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("{me}"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    print("ready", flush=True)
    s.settimeout(5)
    try:
        while True:
            data, _ = s.recvfrom(100)
            if data[:4] == b"PING":
                s.sendto(b"PONG" + data[4:], ("{group}", {port}))
    except socket.timeout:
        pass
""")

RAW_PING = textwrap.dedent("""
    import json, socket, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{group}", {port}))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton("{group}") + socket.inet_aton("{me}"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("{me}"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    s.settimeout(1)
    rtts = []
    for n in range({count}):
        sent = time.monotonic_ns()
        s.sendto(b"PING" + n.to_bytes(4, "big"), ("{group}", {port}))
        try:
            while True:
                data, _ = s.recvfrom(100)
                if data == b"PONG" + n.to_bytes(4, "big"):
                    rtts.append((time.monotonic_ns() - sent) / 1e6)
                    break
        except socket.timeout:
            pass
        time.sleep(max(0.0, {interval} - (time.monotonic_ns() - sent) / 1e9))
    print(json.dumps(rtts))
""")


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    ranked = sorted(runs, key=lambda run: run["pps"])
    middle = dict(ranked[len(ranked) // 2])
    middle["all_pps"] = [round(run["pps"]) for run in runs]  # type: ignore[assignment]
    return middle


def _rounded(runs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(round(a, 3), round(b, 3)) for a, b in runs]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def rtt_raw(h1, h2, count: int, interval: float) -> tuple[float, float]:
    port = PORT + 1
    pong = h2.start(sys.executable, "-c", RAW_PONG.format(group=GROUP, port=port, me=h2.ipv4))
    pong.stdout.readline()
    done = h1.run(
        sys.executable,
        "-c",
        RAW_PING.format(group=GROUP, port=port, me=h1.ipv4, count=count, interval=interval),
        timeout=count * interval + 60,
    )
    pong.kill()
    pong.wait()
    return _percentiles(json.loads(done.stdout))


def rtt_mcast(h1, h2, count: int, interval: float) -> tuple[float, float]:
    port = PORT + 2
    args = ["ping", f"{GROUP}:{port}", "--interval", str(interval), "--json"]
    other = h2.start(*_mcast(*args, "--count", str(count + 40)))
    time.sleep(0.5)
    done = h1.run(*_mcast(*args, "--count", str(count)), timeout=count * interval + 60)
    other.kill()
    other.wait()
    rtt = json.loads(done.stdout)["peers"][0]["multicast"]["rtt_ms"]
    return rtt["p50"], rtt["p99"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput run")
    parser.add_argument("--pings", type=int, default=400, help="RTT samples per run")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between pings")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs; median shown")
    parser.add_argument("--rtt-repeat", type=int, default=5, help="RTT runs; medians shown")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    isolate()
    if shutil.which("iperf") is None:
        print("iperf (iperf2) is needed: apt-get install iperf", file=sys.stderr)
        return 2
    from netlab import Lab

    lab = Lab()
    results: dict[str, object] = {}
    try:
        h1, h2 = lab.lan(2)
        throughput = []
        for size in (64, 1400):
            runs: dict[str, list[dict[str, float]]] = {"iperf2": [], "mcast": [], "interop": []}
            for _ in range(args.repeat):
                runs["iperf2"].append(iperf_pair(h1, h2, size, args.seconds))
                runs["mcast"].append(mcast_pair(h1, h2, size, args.seconds, "mcast"))
                runs["interop"].append(mcast_pair(h1, h2, size, args.seconds, "iperf"))
            reference, ours, interop = (
                _median_run(runs[k]) for k in ("iperf2", "mcast", "interop")
            )
            row = {
                "size": size,
                "iperf2": reference,
                "mcast": ours,
                "iperf2_to_mcast_recv": interop,
                "pps_ratio": ours["pps"] / reference["pps"],
            }
            throughput.append(row)
            if not args.json:
                print(
                    f"{size:>5} B  iperf2 {reference['pps']:>9,.0f} pps loss "
                    f"{reference['loss']:6.2%} | mcast bench {ours['pps']:>9,.0f} pps loss "
                    f"{ours['loss']:6.2%} | ratio {row['pps_ratio']:.2f} | iperf2 -> mcast "
                    f"recv loss {interop['loss']:6.2%} (runs: iperf2 {reference['all_pps']}, "
                    f"mcast {ours['all_pps']})",
                    flush=True,
                )
        # Interleaved runs: each tool's median p50 and p99 over the runs.
        raw_runs, our_runs = [], []
        for _ in range(args.rtt_repeat):
            raw_runs.append(rtt_raw(h1, h2, args.pings, args.interval))
            our_runs.append(rtt_mcast(h1, h2, args.pings, args.interval))
        raw = (statistics.median(r[0] for r in raw_runs), statistics.median(r[1] for r in raw_runs))
        ours_rtt = (
            statistics.median(r[0] for r in our_runs),
            statistics.median(r[1] for r in our_runs),
        )
        rtt = {
            "raw_p50_ms": raw[0],
            "raw_p99_ms": raw[1],
            "mcast_p50_ms": ours_rtt[0],
            "mcast_p99_ms": ours_rtt[1],
            "p50_ratio": ours_rtt[0] / raw[0],
            "p99_ratio": ours_rtt[1] / raw[1],
            "raw_runs": raw_runs,
            "mcast_runs": our_runs,
        }
        results = {"throughput": throughput, "rtt": rtt}
        if not args.json:
            print(
                f"RTT multicast path: raw ping/pong p50 {raw[0]:.3f} ms p99 {raw[1]:.3f} ms | "
                f"mcast ping p50 {ours_rtt[0]:.3f} ms p99 {ours_rtt[1]:.3f} ms | ratio p50 "
                f"{rtt['p50_ratio']:.2f} p99 {rtt['p99_ratio']:.2f}\n"
                f"  per run (p50, p99): raw {_rounded(raw_runs)} mcast {_rounded(our_runs)}"
            )
    finally:
        lab.close()
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
