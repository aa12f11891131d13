"""File distribution side by side: mcast send-file vs uftp and udpcast, same topology, same run.

A sender and N receivers (network namespaces on a bridge, inside a private namespace: the script
re-executes itself under ``unshare --net`` as root), optional random loss on the receivers'
input (nftables), one file of --size MiB. Every receiver's copy is checked with sha256. Each
tool gets a fresh topology per cell.

    python benchmarks/bench_files.py [--size 256] [--receivers 1,3] [--loss 0,5,20] [--repeat 3]
        [--json]

With --repeat, the tools take turns in every round (interleaved) and the median is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _isolation import isolate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _sha(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


TOOL_TIMEOUT = 120  # seconds; udpcast has been seen to stall for good under loss


def _spawn(host, *args: str) -> subprocess.Popen[bytes]:
    """Start a reference tool on a host; its (binary, chatty) output is not needed."""
    return subprocess.Popen(
        host.exec_args(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _run_quiet(host, *args: str) -> None:
    """Run a reference tool to the end, or stop it after TOOL_TIMEOUT (a stall is a result)."""
    # On a timeout subprocess.run kills the tool; the receivers' files say what arrived.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            host.exec_args(*args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT,
            check=False,
        )


def _wait_ready(procs: list, seconds: float = 1.0) -> None:
    time.sleep(seconds)
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"a receiver exited early: {proc.communicate()}")


def run_mcast(sender, receivers, source: Path, work: Path) -> float:
    procs = [
        h.start(
            sys.executable,
            "-m",
            "mcastkit",
            "recv-file",
            "--dir",
            str(work / h.name),
            "--parents",
            "--name",
            h.name,
            "--json",
            "--wait",
            "60",
        )
        for h in receivers
    ]
    _wait_ready(procs)
    start = time.monotonic()
    done = sender.run(
        sys.executable,
        "-m",
        "mcastkit",
        "send-file",
        str(source),
        "--receivers",
        str(len(receivers)),
        "--json",
        timeout=900,
    )
    elapsed = time.monotonic() - start
    for proc in procs:
        proc.communicate(timeout=120)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr)
    return elapsed


def run_uftp(sender, receivers, source: Path, work: Path) -> float:
    ids = [f"0x{n + 1:08x}" for n in range(len(receivers))]
    procs = []
    for host, uid in zip(receivers, ids, strict=True):
        for folder in (work / host.name, work / f"{host.name}-tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        procs.append(
            _spawn(
                host,
                "uftpd",
                "-d",
                "-D",
                str(work / host.name),
                "-I",
                "eth0",
                "-U",
                uid,
                "-T",
                str(work / f"{host.name}-tmp"),
            )
        )
    _wait_ready(procs)
    start = time.monotonic()
    # -R -1: as fast as the interface allows; -H: a closed group of these clients.
    _run_quiet(
        sender, "uftp", "-R", "-1", "-I", "eth0", "-H", ",".join(ids), "-Y", "none", str(source)
    )
    elapsed = time.monotonic() - start
    for proc in procs:
        proc.kill()
        proc.communicate(timeout=30)
    return elapsed


# udpcast's default rendezvous (control to 224.0.0.1) never connects on this bridge; a
# routable group does.
UDPCAST_RDV = ("--mcast-rdv-address", "239.255.0.99")


def run_udpcast(sender, receivers, source: Path, work: Path) -> float:
    procs = []
    for host in receivers:
        (work / host.name).mkdir(parents=True, exist_ok=True)
        procs.append(
            _spawn(
                host,
                "udp-receiver",
                "--file",
                str(work / host.name / source.name),
                "--interface",
                "eth0",
                "--nokbd",
                *UDPCAST_RDV,
            )
        )
    _wait_ready(procs)
    start = time.monotonic()
    _run_quiet(
        sender,
        "udp-sender",
        "--file",
        str(source),
        "--interface",
        "eth0",
        "--min-receivers",
        str(len(receivers)),
        "--nokbd",
        *UDPCAST_RDV,
    )
    elapsed = time.monotonic() - start
    for proc in procs:
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a hung receiver is part of the result
            proc.kill()
            proc.communicate()
    return elapsed


TOOLS = {"mcast": run_mcast, "uftp": run_uftp, "udpcast": run_udpcast}


def _one_run(
    tool: str, receivers: int, loss: int, source: Path, digest: str | None, temp: Path
) -> tuple[float, int]:
    """One transfer on a fresh topology: (seconds, receivers with a correct copy)."""
    from netlab import Lab, nft_drop

    lab = Lab()
    work = temp / f"{tool}-{receivers}-{loss}"
    try:
        sender, *hosts = lab.lan(receivers + 1)
        for host in hosts:
            if loss:
                nft_drop(host, f"ip daddr 224.0.0.0/4 numgen random mod 100 < {loss} drop")
        elapsed = TOOLS[tool](sender, hosts, source, work)
        correct = sum(_sha(work / h.name / source.name) == digest for h in hosts)
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return elapsed, correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="file size in MiB")
    parser.add_argument("--receivers", default="1,3")
    parser.add_argument("--loss", default="0,5,20", help="percent random loss on receivers")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median reported)")
    parser.add_argument("--tools", default="mcast,uftp,udpcast")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    isolate()

    tools = [
        t
        for t in args.tools.split(",")
        if t == "mcast" or shutil.which({"uftp": "uftp", "udpcast": "udp-sender"}[t])
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mcastkit-bench-") as temp:
        source = Path(temp) / "payload.bin"
        with source.open("wb") as handle:
            for _ in range(args.size):
                handle.write(os.urandom(1 << 20))
        digest = _sha(source)
        for receivers in (int(n) for n in args.receivers.split(",")):
            for loss in (int(p) for p in args.loss.split(",")):
                runs: dict[str, list[tuple[float, int]]] = {tool: [] for tool in tools}
                for _ in range(args.repeat):
                    for tool in tools:  # interleaved: every tool sees the same machine state
                        runs[tool].append(
                            _one_run(tool, receivers, loss, source, digest, Path(temp))
                        )
                for tool, results in runs.items():
                    speeds = sorted(args.size * 1.048576 / elapsed for elapsed, _ in results)
                    correct = [c for _, c in results]
                    row = {
                        "tool": tool,
                        "receivers": receivers,
                        "loss": loss,
                        "runs": [
                            {
                                "seconds": round(e, 2),
                                "mb_per_s": round(args.size * 1.048576 / e, 1),
                                "correct": c,
                            }
                            for e, c in results
                        ],
                        "median_mb_per_s": round(statistics.median(speeds), 1),
                        "correct_runs": sum(c == receivers for c in correct),
                    }
                    rows.append(row)
                    if not args.json:
                        print(
                            f"{tool:<8} {receivers} rcv {loss:>2}% loss  "
                            f"{row['median_mb_per_s']:>7.1f} MB/s (median of {len(results)})  "
                            f"correct {row['correct_runs']}/{len(results)} runs  "
                            f"each {[r['mb_per_s'] for r in row['runs']]}",
                            flush=True,
                        )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
