"""File distribution side by side: mcast send-file vs uftp and udpcast, same topology, same run.

A sender and N receivers (network namespaces on a bridge, inside a private namespace: the
script re-executes itself under ``unshare --net`` as root), optional random loss on the
receivers' input (nftables, 239/8), one file of --size MiB. Everything lives on tmpfs
(--work, default /dev/shm), so disk speed is not measured. Every tool runs as its
documentation says and as ../shared/bench/filedist.sh (the reference harness) runs it: the
clock runs from the sender's start to its exit (each sender exits only once its receivers
have the file), then every receiver's copy is checked with sha256. A run in which a copy is
wrong does not count as a speed.

--wire 1: hosts cut UDP GSO batches into datagrams before their veth, so the bridge carries
MTU-sized frames as a real link does. --wire 0: GSO batches cross the bridge whole, what
same-host containers see (and where GRO hands them to the receiver whole).

    python benchmarks/bench_files.py [--size 256] [--receivers 1,3] [--loss 0,5,20]
        [--repeat 3] [--wire 1,0] [--tools mcast,mcast-max,mcast-sealed,uftp,udpcast] [--json]

``mcast-sealed`` is mcast with a group key on both sides: every datagram sealed. ``mcast-max``
is mcast with ``--rate max`` (no rate control), the mark its default ``--rate auto`` is held to.

The tools take turns in every round (interleaved); medians are reported, with mcast/uftp.
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

TOOL_TIMEOUT = 300  # seconds for one sender, as in the reference harness


def _sha(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _spawn(host, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        host.exec_args(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _timed(host, *args: str) -> tuple[float, int]:
    """Run a sender to its end: (seconds, exit code); a timeout is exit code -1."""
    start = time.monotonic()
    try:
        done = subprocess.run(
            host.exec_args(*args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = -1
    return time.monotonic() - start, code


def _stop(procs: list[subprocess.Popen[bytes]], wait: float) -> None:
    for proc in procs:
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            proc.kill()
            proc.wait()


def run_mcast(
    sender, receivers, source: Path, work: Path, *extra: str, sending: tuple[str, ...] = ()
) -> tuple[float, int, list[Path]]:
    procs = [
        _spawn(
            host,
            sys.executable,
            "-m",
            "mcastkit",
            "recv-file",
            "--group",
            "239.1.4.1:6100",
            "--iface",
            "eth0",
            "--dir",
            str(work / f"r{n}"),
            "--parents",
            "--name",
            f"r{n}",
            "--wait",
            "60",
            "--json",
            *extra,
        )
        for n, host in enumerate(receivers, 1)
    ]
    time.sleep(0.5)
    elapsed, code = _timed(
        sender,
        sys.executable,
        "-m",
        "mcastkit",
        "send-file",
        "--group",
        "239.1.4.1:6100",
        "--iface",
        "eth0",
        "--receivers",
        str(len(receivers)),
        "--json",
        *extra,
        *sending,
        str(source),
    )
    _stop(procs, 30)  # receivers finish on their own once the sender acknowledged them
    return elapsed, code, [work / f"r{n}" / source.name for n in range(1, len(receivers) + 1)]


def run_uftp(sender, receivers, source: Path, work: Path) -> tuple[float, int, list[Path]]:
    ids = []
    procs = []
    for n, host in enumerate(receivers, 1):
        uid = f"0x{n:08X}"
        ids.append(uid)
        (work / f"r{n}").mkdir(parents=True, exist_ok=True)
        procs.append(
            _spawn(
                host,
                "uftpd",
                "-d",
                "-q",
                "-I",
                "eth0",
                "-M",
                "239.1.2.1",
                "-D",
                str(work / f"r{n}"),
                "-U",
                uid,
            )
        )
    time.sleep(0.5)
    # -R -1: as fast as the interface allows. uftp exits once every client reported the file
    # complete (and the client has moved it into place).
    elapsed, code = _timed(
        sender,
        "uftp",
        "-I",
        "eth0",
        "-M",
        "239.1.2.1",
        "-P",
        "239.1.2.2",
        "-H",
        ",".join(ids),
        "-R",
        "-1",
        str(source),
    )
    for proc in procs:  # uftpd is a daemon: it never exits on its own
        proc.terminate()
    _stop(procs, 5)
    return elapsed, code, [work / f"r{n}" / source.name for n in range(1, len(receivers) + 1)]


def run_udpcast(sender, receivers, source: Path, work: Path) -> tuple[float, int, list[Path]]:
    procs = []
    for n, host in enumerate(receivers, 1):
        (work / f"r{n}").mkdir(parents=True, exist_ok=True)
        procs.append(
            _spawn(
                host,
                "udp-receiver",
                "--nokbd",
                "--interface",
                "eth0",
                "--mcast-rdv-address",
                "239.1.3.1",
                "--file",
                str(work / f"r{n}" / "recv.bin"),
                "--start-timeout",
                "60",
                "--receive-timeout",
                "60",
            )
        )
    time.sleep(0.3)
    elapsed, code = _timed(
        sender,
        "udp-sender",
        "--nokbd",
        "--interface",
        "eth0",
        "--file",
        str(source),
        "--mcast-rdv-address",
        "239.1.3.1",
        "--mcast-data-address",
        "239.1.3.2",
        "--nopointopoint",
        "--min-receivers",
        str(len(receivers)),
        "--max-wait",
        "30",
        "--start-timeout",
        "60",
        "--full-duplex",
    )
    _stop(procs, 60)
    return elapsed, code, [work / f"r{n}" / "recv.bin" for n in range(1, len(receivers) + 1)]


def run_mcast_sealed(sender, receivers, source: Path, work: Path) -> tuple[float, int, list[Path]]:
    """mcast with every datagram sealed by a group key (both sides hold it)."""
    key = source.parent / "group.key"
    if not key.exists():
        from mcastkit.keyfiles import write_key_file

        write_key_file(key)
    return run_mcast(sender, receivers, source, work, "--key-file", str(key))


def run_mcast_max(sender, receivers, source: Path, work: Path) -> tuple[float, int, list[Path]]:
    """mcast with no rate control at all (``--rate max``): what ``auto`` must keep up with."""
    return run_mcast(sender, receivers, source, work, sending=("--rate", "max"))


TOOLS = {
    "mcast": run_mcast,
    "mcast-max": run_mcast_max,
    "mcast-sealed": run_mcast_sealed,
    "uftp": run_uftp,
    "udpcast": run_udpcast,
}
NEEDS = {
    "mcast": None,
    "mcast-max": None,
    "mcast-sealed": None,
    "uftp": "uftp",
    "udpcast": "udp-sender",
}


def _one_run(
    tool: str, receivers: int, loss: int, wire: bool, source: Path, digest: str, work: Path
) -> dict:
    """One transfer on a fresh topology."""
    from netlab import Lab, nft_drop

    lab = Lab()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        sender, *hosts = lab.lan(receivers + 1, wire=wire)
        for host in hosts:
            if loss:
                nft_drop(host, f"ip daddr 239.0.0.0/8 numgen random mod 100 < {loss} drop")
        elapsed, code, copies = TOOLS[tool](sender, hosts, source, work)
        correct = sum(_sha(copy) == digest for copy in copies)
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "seconds": round(elapsed, 3),
        "mb_per_s": round(source.stat().st_size / 1e6 / elapsed, 1),
        "exit": code,
        "correct": correct,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="file size in MiB")
    parser.add_argument("--receivers", default="1,3")
    parser.add_argument("--loss", default="0,5,20", help="percent random loss on receivers")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (median reported)")
    parser.add_argument("--wire", default="1,0", help="1: MTU frames on the bridge; 0: GSO whole")
    parser.add_argument("--tools", default="mcast,uftp,udpcast")
    parser.add_argument("--work", type=Path, default=Path("/dev/shm"), help="tmpfs to work in")
    parser.add_argument("--json", action="store_true", help="one JSON object per cell")
    args = parser.parse_args()
    isolate()

    tools = []
    for tool in args.tools.split(","):
        need = NEEDS[tool]
        if need is None or shutil.which(need):
            tools.append(tool)
        else:
            print(f"skipping {tool}: {need} is not installed (apt-get install {tool})")
    with tempfile.TemporaryDirectory(prefix="mcastkit-bench-", dir=args.work) as temp:
        source = Path(temp) / "src.bin"
        with source.open("wb") as handle:
            for _ in range(args.size):
                handle.write(os.urandom(1 << 20))
        digest = _sha(source)
        assert digest is not None
        for wire in (w == "1" for w in args.wire.split(",")):
            for receivers in (int(n) for n in args.receivers.split(",")):
                for loss in (int(p) for p in args.loss.split(",")):
                    runs: dict[str, list[dict]] = {tool: [] for tool in tools}
                    for _ in range(args.repeat):
                        for tool in tools:  # interleaved: each sees the same machine state
                            runs[tool].append(
                                _one_run(
                                    tool, receivers, loss, wire, source, digest, Path(temp) / "w"
                                )
                            )
                    medians = {}
                    for tool, results in runs.items():
                        good = [r["mb_per_s"] for r in results if r["correct"] == receivers]
                        medians[tool] = statistics.median(good) if good else None
                    ratio = sealed = auto_over_max = None
                    if medians.get("mcast") and medians.get("uftp"):
                        ratio = round(medians["mcast"] / medians["uftp"], 2)
                    if medians.get("mcast") and medians.get("mcast-sealed"):
                        sealed = round(medians["mcast-sealed"] / medians["mcast"], 2)
                    if medians.get("mcast") and medians.get("mcast-max"):
                        auto_over_max = round(medians["mcast"] / medians["mcast-max"], 2)
                    cell = {
                        "wire": int(wire),
                        "receivers": receivers,
                        "loss": loss,
                        "median_mb_per_s": medians,
                        "mcast_over_uftp": ratio,
                        "sealed_over_plain": sealed,
                        "auto_over_max": auto_over_max,
                        "runs": runs,
                    }
                    if args.json:
                        print(json.dumps(cell), flush=True)
                    else:
                        text = "  ".join(
                            f"{tool} {m if m is not None else 'FAILED':>6} MB/s "
                            f"({sum(r['correct'] == receivers for r in runs[tool])}/"
                            f"{len(runs[tool])} correct)"
                            for tool, m in medians.items()
                        )
                        print(
                            f"wire={int(wire)} {receivers} rcv {loss:>2}% loss  {text}  "
                            f"mcast/uftp {ratio}"
                            + (f"  sealed/plain {sealed}" if sealed is not None else "")
                            + (f"  auto/max {auto_over_max}" if auto_over_max is not None else ""),
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
