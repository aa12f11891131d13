"""``mcast dump``: every datagram on a group, decoded when it is mcastkit's; pcap output."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from collections import Counter, defaultdict
from typing import Any, BinaryIO

from ..addr import format_endpoint, parse_group
from ..diag.dump import PcapWriter, describe_untrusted
from ..security import KeyRing
from ..transport import Packet, open_receiver
from ..transport.driver import STOP, Driver
from ..transport.platform import default_cipher
from . import argtypes
from .output import (
    UsageError,
    add_key_options,
    drop_warning,
    emit_json,
    group_key,
    note,
    preview,
    say,
)
from .signals import CtrlC
from .traffic import LISTEN_RCVBUF


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``mcast dump``."""
    dump = commands.add_parser(
        "dump",
        help="show every datagram on a group, decoding mcastkit frames; write pcap",
        description="Join GROUP:PORT and show each datagram with its mcastkit frame fields "
        "(type, sender, seq, topic, encrypted or not). --pcap writes a capture tshark reads.",
    )
    argtypes.add_group(dump, optional=True)
    argtypes.add_iface(dump)
    dump.add_argument("--source", action="append", default=[], help="SSM source (repeatable)")
    dump.add_argument(
        "--count", type=argtypes.count("datagrams"), help="stop after this many datagrams"
    )
    dump.add_argument("--timeout", type=argtypes.seconds(), help="stop after this many seconds")
    dump.add_argument("--pcap", metavar="FILE", help="also write a pcap file (LINKTYPE_RAW)")
    dump.add_argument(
        "--rcvbuf",
        type=argtypes.size(1024),
        default=LISTEN_RCVBUF,
        help=f"receive buffer bytes (default {LISTEN_RCVBUF >> 20} MiB)",
    )
    add_key_options(dump)
    dump.add_argument(
        "--wireshark-plugin",
        action="store_true",
        help="say where mcastkit's Wireshark dissector is and how to install it (no capture)",
    )
    argtypes.add_json(dump, "NDJSON: one object per datagram")
    dump.set_defaults(handler=cmd_dump)


def _bracketed(address: str) -> str:
    """An IPv6 address in brackets, as next to a port: ``[ff15::1]``."""
    return f"[{address}]" if ":" in address else address


def _line(record: dict[str, Any], data: bytes) -> str:
    info = record["decoded"]
    head = (
        f"{time.strftime('%H:%M:%S', time.localtime(record['time']))} "
        f"{format_endpoint(record['source'], record['source_port'])} -> "
        f"{_bracketed(record['destination'])} "
        f"{record['size']:>5} B ttl={record['ttl']}"
        + (f" via {record['iface']}" if record.get("iface") else "")
    )
    if info["kind"] == "mcastkit":
        if "type" not in info:
            lock = f"sealed, key {info.get('key_id')}" if info.get("encrypted") else ""
            return f"{head}  mcastkit {lock} {info.get('error', '')}".rstrip()
        sealed = " sealed" if info.get("encrypted") else ""
        flags = f" [{','.join(info['flags'])}]" if info["flags"] else ""
        return (
            f"{head}  mcastkit {info['type']}{sealed}{flags} from {info['sender'][:8]} "
            f"seq {info['seq']} topic {info['topic']!r} {info['payload_size']} B"
        )
    if info["kind"] == "mcast-ping":
        return (
            f"{head}  mcast-ping {info['type']} ({info['path']}) from "
            f"{info['sender'][:8]} seq {info['seq']}"
        )
    if info["kind"] == "mcast-bench":
        return f"{head}  mcast-bench seq {info['seq']}"
    return f"{head}  {preview(data)}"


def cmd_dump(args: argparse.Namespace) -> int:
    """Dump until --count, --timeout or Ctrl-C."""
    if args.wireshark_plugin:
        return _show_wireshark_plugin(args.json)
    if args.group is None:
        raise UsageError("give the GROUP:PORT to dump (or --wireshark-plugin)")
    spec = parse_group(args.group)
    key = group_key(args, args.group)
    keyring = None if key is None else KeyRing([key], os.urandom, cipher=default_cipher())
    receiver = open_receiver(spec, iface=args.iface, sources=args.source)
    receiver.grow_rcvbuf(args.rcvbuf)  # what the kernel grants; its drops are reported
    kernel_drops = 0
    pcap_file: BinaryIO | None = None
    writer: PcapWriter | None = None
    if args.pcap:
        try:
            pcap_file = open(args.pcap, "wb")  # noqa: SIM115 (closed in finally)
            writer = PcapWriter(pcap_file)
        except OSError as exc:
            receiver.close()
            raise UsageError(f"cannot write {args.pcap}: {exc.strerror}") from None
    interrupted = CtrlC().install()
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    pcap_error = None
    start = time.monotonic()
    note(
        f"dumping {spec} via {receiver.interface.name}"
        + (f" to {args.pcap}" if args.pcap else "")
        + "; Ctrl-C to stop"
    )

    def take(packet: Packet) -> bool:
        nonlocal total, pcap_error
        wall = time.time()
        total += 1
        decoded = describe_untrusted(packet.data, keyring)
        sender = format_endpoint(packet.source, packet.source_port)
        per_source[sender]["datagrams"] += 1
        per_source[sender]["bytes"] += len(packet.data)
        per_source[sender][decoded.get("type", decoded["kind"])] += 1
        destination = packet.destination or str(spec.group)
        record = {
            "time": round(wall, 6),
            "source": packet.source,
            "source_port": packet.source_port,
            "destination": destination,
            "iface": packet.iface,
            "ttl": packet.ttl,
            "size": len(packet.data),
            "decoded": decoded,
        }
        if args.json:
            emit_json(record)
        else:
            say(_line(record, packet.data))
        if writer is not None and pcap_error is None:
            try:
                writer.write(
                    packet.data,
                    source=packet.source,
                    source_port=packet.source_port,
                    destination=destination,
                    destination_port=spec.port,
                    ttl=packet.ttl,
                    wall_time=wall,
                )
            except OSError as exc:
                # A full disk: stop writing, keep showing, say so at the end.
                pcap_error = (
                    f"writing {args.pcap} failed after {total - 1} datagram(s): {exc.strerror}"
                )
        return args.count is not None and total >= args.count

    def turn(now: float) -> float | None:
        if interrupted() or (args.count is not None and total >= args.count):
            return STOP
        elapsed = now - start
        if args.timeout is not None and elapsed >= args.timeout:
            return STOP
        return 0.25 if args.timeout is None else min(0.25, args.timeout - elapsed)

    try:
        with receiver, Driver() as driver:
            driver.read_each(receiver, take)
            driver.run(turn)
            load = receiver.load()  # also the drops after the last datagram read
            kernel_drops = load.drops if load is not None else 0
    finally:
        interrupted.restore()
        if pcap_file is not None:
            try:
                pcap_file.close()
            except OSError as exc:
                pcap_error = pcap_error or f"closing {args.pcap} failed: {exc.strerror}"
    summary = {
        "group": str(spec),
        "datagrams": total,
        "kernel_drops": kernel_drops,
        "sources": {k: dict(v) for k, v in per_source.items()},
        "pcap": args.pcap,
        "pcap_error": pcap_error,
    }
    if args.json:
        emit_json({"summary": summary})
    else:
        note(f"{total} datagram(s) from {len(per_source)} source(s)")
        for sender, counts in sorted(per_source.items(), key=lambda kv: -kv[1]["datagrams"]):
            kinds = ", ".join(
                f"{k} {v}" for k, v in counts.items() if k not in ("datagrams", "bytes")
            )
            note(
                f"  {sender:<24} {counts['datagrams']:>7} datagrams {counts['bytes']:>10} bytes"
                f"  ({kinds})"
            )
        if kernel_drops:
            note(drop_warning(kernel_drops, receiver.rcvbuf, "not shown, not saved"))
    if pcap_error:
        note(f"error: {pcap_error}; the datagrams above were shown but not all saved")
        return 2
    return 0 if total else 1


def _show_wireshark_plugin(as_json: bool) -> int:
    """Where the dissector shipped in the package is, and where Wireshark looks for it."""
    from importlib import resources

    plugin = resources.files("mcastkit") / "data" / "mcastkit.lua"
    path = str(plugin)
    if not plugin.is_file():
        raise UsageError(f"the dissector is missing from this install ({path}): reinstall mcastkit")
    folder = _personal_lua_folder()
    install = [["mkdir", "-p", folder], ["cp", path, folder + "/"]]
    once = ["tshark", "-X", f"lua_script:{path}", "-r", "CAPTURE.pcap"]
    if as_json:
        emit_json({"plugin": path, "folder": folder, "install": install, "once": once})
        return 0
    say(f"mcastkit's Wireshark dissector: {path}")
    say("install it for Wireshark and tshark (then restart Wireshark):")
    say("  " + " && ".join(shlex.join(command) for command in install))
    say("or load it for one run:")
    say("  " + shlex.join(once))
    say('then filter on: mcastkit, mcastkit.type == 7, mcastkit.topic == "chat", ...')
    return 0


def _personal_lua_folder() -> str:
    """Wireshark's personal Lua plugin folder, as tshark names it (its default otherwise)."""
    import subprocess

    try:
        listed = subprocess.run(
            ["tshark", "-G", "folders"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        name, _, folder = line.partition(":")
        if name.strip() == "Personal Lua Plugins" and folder.strip():
            return folder.strip()
    return os.path.expanduser("~/.local/lib/wireshark/plugins")
